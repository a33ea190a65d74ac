"""transformers' side of `cargo xtask bench pipelines`: text classification and head importance
of a BertForSequenceClassification directory over the files the Rust bench generates, timed over
the same region as Focal's, on the same threads.

Not part of CI. Pinned: torch 2.15.0, transformers 4.57.1. First write the model both sides
load (all-MiniLM-L6-v2's encoder with a seeded random 3-label head), then run the bench, which
runs this script itself:

    python3 crates/focal-bench/torch_pipelines.py --make-from MINILM --model target/bench/minilm-classify
    cargo xtask bench pipelines --model target/bench/minilm-classify --python python3

The timed region of each workload, as on Focal's side: loading the model and tokenizer, reading
the file, and every batch of `--batch-size` texts in file order, to the results in memory; once,
after an untimed warm-up (a load and the first 64 texts). Loading alone is timed inside it.

- classify: `tokenizer(batch, padding=True, truncation=True)`, the model, softmax, the best
  label and its score (transformers' text-classification pipeline's function for a single-label
  model); written per line for the bench to compare with Focal's.
- heads: Michel et al. (2019)'s importance as Focal computes it: each row its own head mask
  (transformers' `head_mask`, given per row as [layers, b, heads, 1, 1], which its eager
  attention multiplies into the probabilities), the rows' summed cross-entropy, one backward per
  batch, `|d loss / d mask|` summed over the rows; the mean over rows, each layer divided by its
  l2 norm. Inputs cut to `--max-length`.
"""

import argparse
import csv
import datetime
import json
import time

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def load(model_dir, eager=False):
    kwargs = {"attn_implementation": "eager"} if eager else {}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def classify(model_dir, lines_path, batch_size, limit=None):
    started = time.perf_counter()
    model, tokenizer = load(model_dir)
    load_seconds = time.perf_counter() - started
    with open(lines_path) as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    texts = texts[:limit]
    labels = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                              return_tensors="pt")
            scores = model(**batch).logits.softmax(-1)
            best, index = scores.max(-1)
            labels += [[model.config.id2label[j], s] for j, s in zip(index.tolist(), best.tolist())]
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": load_seconds,
        "labels": labels,
    }


def heads(model_dir, rows_path, batch_size, max_length, limit=None):
    started = time.perf_counter()
    model, tokenizer = load(model_dir, eager=True)
    load_seconds = time.perf_counter() - started
    with open(rows_path) as f:
        rows = list(csv.DictReader(f))[:limit]
    config = model.config
    layers, count = config.num_hidden_layers, config.num_attention_heads
    total = torch.zeros(layers, count)
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        inputs = tokenizer([r["text"] for r in batch], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt")
        targets = torch.tensor([config.label2id[r["label"]] for r in batch])
        mask = torch.ones(len(batch), layers, count, requires_grad=True)
        head_mask = mask.permute(1, 0, 2)[:, :, :, None, None]
        logits = model(**inputs, head_mask=head_mask).logits
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        loss.backward()
        total += mask.grad.abs().sum(0)
    importance = total / len(rows)
    normalised = importance / importance.norm(dim=-1, keepdim=True)
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": load_seconds,
        "rows": len(rows),
        "normalised": normalised.tolist(),
    }


def make(minilm, out):
    """all-MiniLM-L6-v2's encoder with a seeded random 3-label head, as transformers saves it."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(out)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--make-from", help="write --model from this all-MiniLM-L6-v2 and stop")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out")
    parser.add_argument("--lines")
    parser.add_argument("--rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    assert transformers.__version__ == "4.57.1", transformers.__version__
    if args.make_from:
        make(args.make_from, args.model)
        return
    if args.threads is None or args.out is None:
        parser.error("--threads and --out are required to measure")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads")
    figures = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "measured": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    if args.lines:
        classify(args.model, args.lines, args.batch_size, limit=64)
        figures["classify"] = classify(args.model, args.lines, args.batch_size)
        print(f"classify: {figures['classify']['seconds']:.2f} s")
    if args.rows:
        heads(args.model, args.rows, args.batch_size, args.max_length, limit=64)
        figures["heads"] = heads(args.model, args.rows, args.batch_size, args.max_length)
        print(f"heads: {figures['heads']['seconds']:.2f} s")
    with open(args.out, "w") as f:
        json.dump(figures, f)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
