"""PyTorch baseline for `focal train --task classify`: fine-tunes a BERT / sentence-transformers
directory with a new sequence-classification head on a CSV file (columns text, label), with
AdamW at a constant learning rate, batches of 32 shuffled with a seed, inputs cut to
--max-length tokens, 2 threads, as Focal's fine-tuning does; prints training examples per
second. Compare with `focal train --task classify ... --epochs 1` (its metrics.json has
examples_per_second) in the same hour.

    pip install torch==2.15.0 transformers==4.57.1
    python3 crates/focal-bench/torch_finetune.py --init DIR --data FILE.csv
"""

import argparse
import csv
import random
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--init", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--max-length", type=int, default=128)
parser.add_argument("--lr", type=float, default=5e-5)
args = parser.parse_args()
torch.set_num_threads(2)
torch.manual_seed(42)
rows = list(csv.DictReader(open(args.data)))
labels = sorted({r["label"] for r in rows})
model = AutoModelForSequenceClassification.from_pretrained(args.init, num_labels=len(labels))
tokenizer = AutoTokenizer.from_pretrained(args.init)
# burn's AdamW defaults, which Focal's FusedAdamW keeps: eps 1e-5, weight decay 1e-4.
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, eps=1e-5, weight_decay=1e-4)
model.train()
order = list(range(len(rows)))
start = time.perf_counter()
for epoch in range(args.epochs):
    random.Random(42 + epoch).shuffle(order)
    for i in range(0, len(order), args.batch_size):
        batch = [rows[j] for j in order[i:i + args.batch_size]]
        inputs = tokenizer([r["text"] for r in batch], padding=True, truncation=True,
                           max_length=args.max_length, return_tensors="pt")
        targets = torch.tensor([labels.index(r["label"]) for r in batch])
        loss = model(**inputs, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
elapsed = time.perf_counter() - start
n = len(rows) * args.epochs
print(f"torch {torch.__version__}: {n} examples in {elapsed:.1f} s, {n / elapsed:.1f} examples/s")
