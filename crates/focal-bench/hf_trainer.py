"""Hugging Face `Trainer` baseline for `cargo xtask bench train`: fine-tunes a BERT /
sentence-transformers directory with a new sequence-classification head on a CSV file (columns
text, label), with Trainer's defaults (AdamW, linear schedule, no warmup), batches of 32 padded
per batch (DataCollatorWithPadding), inputs cut to 128 tokens, on `--threads` threads; after
each epoch it evaluates on the file's first `--valid-rows` rows and saves a checkpoint, as
Focal's run does. Writes the examples per second Trainer reports.

The Rust bench runs it itself on the same file and settings:

    pip install torch==2.15.0 transformers==4.57.1 accelerate==1.12.0
    cargo xtask bench train --init DIR --data FILE.csv --python PYTHON
"""

import argparse
import csv
import json
import os
import tempfile
import time

import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("--init", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--max-length", type=int, default=128)
parser.add_argument("--lr", type=float, default=5e-5)
parser.add_argument("--valid-rows", type=int, default=64)
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()
assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
assert transformers.__version__ == "4.57.1", transformers.__version__
torch.set_num_threads(args.threads)

rows = list(csv.DictReader(open(args.data)))
labels = sorted({r["label"] for r in rows})
tokenizer = AutoTokenizer.from_pretrained(args.init)
model = AutoModelForSequenceClassification.from_pretrained(args.init, num_labels=len(labels))
encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_length)


class Rows(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = {k: v[i] for k, v in encoded.items()}
        item["labels"] = labels.index(rows[i]["label"])
        return item


with tempfile.TemporaryDirectory() as scratch:
    training = TrainingArguments(
        output_dir=scratch,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        eval_strategy="epoch",
        save_strategy="epoch",
        per_device_eval_batch_size=args.batch_size,
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        use_cpu=True,
        seed=42,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Rows(len(rows)),
        eval_dataset=Rows(min(args.valid_rows, len(rows))),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started = time.perf_counter()
    metrics = trainer.train().metrics
    seconds = time.perf_counter() - started

figures = {
    "examples": len(rows) * args.epochs,
    "seconds": seconds,
    "examples_per_second": metrics["train_samples_per_second"],
    "batch_size": args.batch_size,
    "max_length": args.max_length,
    "threads": torch.get_num_threads(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "measured": time.strftime("%Y-%m-%d %H:%M"),
}
os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
with open(args.out, "w") as f:
    json.dump(figures, f, indent=2)
print(json.dumps(figures, indent=2))
