"""A labelled corpus of financial news headlines (positive / negative / neutral) for Focal's
worked fine-tuning example (docs/training.md). No public financial-sentiment dataset can be
downloaded where Focal is built, so this script writes a synthetic one that is realistic in form:
fictional companies, numbers, quarters and people; many sentence structures; negations ("did not
meet"), hedges ("may", "analysts say"), and phrasings whose sentiment the words alone do not give
("falls less than feared" is positive, "fails to lift" negative). 2% of the training and
validation labels are flipped at random, as annotators disagree on real headlines; the test file
is clean.

The last four phrasings of each label are kept out of the training and validation files: about a
fifth of the test file is written in phrasings the model has never seen, which is where a
fine-tuned model and a frozen-embedding baseline differ most.

Writes, with disjoint texts:
  finance_train.csv  3000 rows   (text,label)
  finance_valid.csv   500 rows   (used by fine-tuning to keep the best epoch)
  finance_test.csv   1000 rows   (held out: scored once, after training)

Run: python3 examples/finance/generate_headlines.py [OUT_DIR]   (default: examples/finance/data)
Standard library only; the output is the same on every run (seeded)."""

import csv
import os
import random
import sys

COMPANIES = [
    "Northwind Logistics", "Acme Robotics", "Bluefin Energy", "Carrow Bank", "Delta Pharma",
    "Everly Foods", "Fenwick Motors", "Granite Telecom", "Harbor Insurance", "Ironclad Steel",
    "Juniper Software", "Kestrel Airlines", "Lumen Retail", "Meridian Mining", "Norrland Paper",
    "Orion Semiconductors", "Pioneer Utilities", "Quarry Cement", "Redwood Media", "Solano Chemicals",
    "Tidewater Shipping", "Umbra Games", "Vantage Healthcare", "Westbrook Realty", "Yellowstone Oil",
    "Zephyr Wind", "Alder Biotech", "Brightline Rail", "Cobalt Payments", "Driftwood Hotels",
]
PEOPLE = ["Maria Lindqvist", "James Okafor", "Priya Raman", "Tomas Berg", "Elena Rossi",
          "Kenji Watanabe", "Sarah Cohen", "David Mensah", "Laura Schmidt", "Ahmed Haddad"]
ROLES = ["chief executive", "chief financial officer", "chair", "head of operations", "president"]
QUARTERS = ["first-quarter", "second-quarter", "third-quarter", "fourth-quarter", "half-year",
            "full-year", "Q1", "Q2", "Q3", "Q4"]
PRODUCTS = ["cloud", "battery", "subscription", "generic drug", "electric vehicle", "freight",
            "mortgage", "chip", "streaming", "fertiliser"]
REGIONS = ["Europe", "Asia", "North America", "Latin America", "the Nordics", "China", "India"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September",
          "October", "November"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def pct():
    return random.choice([f"{random.randint(1, 35)}%", f"{random.randint(1, 19)}.{random.randint(1, 9)}%"])


def money():
    unit = random.choice(["million", "billion", "m", "bn"])
    amount = random.randint(2, 950) if unit in ("million", "m") else round(random.uniform(1, 40), 1)
    return random.choice(["$", "EUR ", "£"]) + f"{amount} {unit}".replace(" m", "m").replace(" bn", "bn")


def fill(template):
    a, b = random.sample(COMPANIES, 2)
    return template.format(
        co=a, co2=b, p=pct(), m=money(), q=random.choice(QUARTERS), prod=random.choice(PRODUCTS),
        region=random.choice(REGIONS), person=random.choice(PEOPLE), role=random.choice(ROLES),
        month=random.choice(MONTHS), day=random.choice(WEEKDAYS), n=random.randint(120, 9000),
        d=random.randint(1, 28),
    )


POSITIVE = [
    "{co} shares jump {p} after {q} earnings beat estimates",
    "{co} raises full-year guidance as {prod} demand surges",
    "{co} posts record revenue of {m}",
    "Analysts upgrade {co} to buy, citing stronger margins",
    "{co} wins {m} contract from {co2}",
    "{co} net profit rises {p} to {m}",
    "{co} lifts dividend by {p} after a strong year",
    "{co} {q} profit falls less than feared, shares rally",
    "{co} avoids a loss despite a weak quarter in {region}",
    "{co} beats expectations on every line as costs ease",
    "Strong {prod} sales push {co} to its best quarter on record",
    "{co} returns to profit in {q} results",
    "{co} secures regulatory approval for its {prod} business in {region}",
    "Orders at {co} climb {p}, well ahead of forecasts",
    "{co} expects margins to improve further next year",
    "Investors cheer as {co} announces {m} share buyback",
    "{co} debt rating upgraded after sharp fall in leverage",
    "{co} shares hit all-time high on {prod} growth",
    "Demand in {region} lifts {co} sales by {p}",
    "{co} no longer expects a loss this year",
]
NEGATIVE = [
    "{co} shares slump {p} after profit warning",
    "{co} to cut {n} jobs as sales keep falling",
    "{co} misses {q} estimates as costs rise",
    "Regulators fine {co} {m} over reporting failures",
    "{co} lowers outlook on weak {prod} demand",
    "{co} swings to a {q} loss of {m}",
    "{co} did not meet analyst expectations for the {q}",
    "{co} shares fail to recover after {q} results disappoint",
    "{co} may cut its dividend, people familiar with the matter say",
    "Analysts downgrade {co} to sell on shrinking margins",
    "{co} suspends guidance as demand in {region} collapses",
    "{co} warns of lower profits as {co2} contract ends",
    "{co} {q} revenue drops {p}, worse than feared",
    "{co} is unlikely to hit its targets this year, analysts say",
    "Credit agency cuts {co} rating to junk",
    "{co} writes down {m} on failed {prod} venture",
    "{co} chief executive {person} resigns amid accounting probe",
    "Losses widen at {co} as {prod} prices tumble",
    "{co} recalls products in {region}, shares fall {p}",
    "Weak {prod} sales fail to lift {co} out of the red",
]
NEUTRAL = [
    "{co} to report {q} results on {day}",
    "{co} appoints {person} as {role}",
    "{co} shares little changed ahead of central bank decision",
    "{co} completes previously announced merger with {co2}",
    "{co} annual general meeting scheduled for {month} {d}",
    "{co} {q} revenue in line with expectations at {m}",
    "{co} confirms talks with {co2}, no decision yet",
    "{co} keeps its dividend unchanged",
    "{co} moves its headquarters to {region}",
    "{co} publishes its sustainability report for the year",
    "{co} says outlook for the year is unchanged",
    "{co} to present at investor conference in {month}",
    "{co} names {person} to its board",
    "{co} opens new office in {region}",
    "{co} reaffirms guidance, shares flat",
    "{co} files its {q} report with the regulator",
    "{co} and {co2} sign a memorandum of understanding on {prod}",
    "No change to {co} dividend policy, says {role}",
    "{co} will hold a capital markets day on {day}",
    "{co} issues {m} of bonds to refinance existing debt",
]
LABELS = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
PREFIXES = ["", "", "", "UPDATE: ", "BRIEF-", "Market wrap: "]


HELD_OUT_PHRASINGS = 4


def headline(label, unseen):
    templates = LABELS[label] if unseen else LABELS[label][:-HELD_OUT_PHRASINGS]
    text = random.choice(PREFIXES) + fill(random.choice(templates))
    if random.random() < 0.15:
        text += random.choice([" - report", " - sources", ", shares in focus", " (Reuters style)"])
    return text


def rows(n, seen, noise, unseen):
    out = []
    while len(out) < n:
        label = random.choices(["positive", "negative", "neutral"], weights=[0.3, 0.3, 0.4])[0]
        text = headline(label, unseen)
        if text in seen:
            continue
        seen.add(text)
        if random.random() < noise:
            label = random.choice([l for l in LABELS if l != label])
        out.append((text, label))
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "examples/finance/data"
    os.makedirs(out_dir, exist_ok=True)
    random.seed(2026)
    seen = set()
    for name, n, noise, unseen in [
        ("train", 3000, 0.02, False),
        ("valid", 500, 0.02, False),
        ("test", 1000, 0.0, True),
    ]:
        with open(os.path.join(out_dir, f"finance_{name}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows(n, seen, noise, unseen))


if __name__ == "__main__":
    main()
