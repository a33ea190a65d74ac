"""PyTorch baseline for `focal classify`: a BertForSequenceClassification directory over the
lines of a file, in batches of 32 in file order (as `focal classify` streams them), 2 threads.
Prints sentences per second; compare with `/usr/bin/time -v focal classify --model DIR < FILE`
in the same hour.

    pip install torch==2.15.0 transformers==4.57.1
    python3 crates/focal-bench/torch_classify.py --model DIR --lines FILE
"""

import argparse
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--lines", required=True)
parser.add_argument("--batch-size", type=int, default=32)
args = parser.parse_args()
torch.set_num_threads(2)
model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
tokenizer = AutoTokenizer.from_pretrained(args.model)
texts = [line.rstrip("\n") for line in open(args.lines) if line.strip()]
start = time.perf_counter()
with torch.inference_mode():
    for i in range(0, len(texts), args.batch_size):
        batch = tokenizer(texts[i:i + args.batch_size], padding=True, truncation=True,
                          return_tensors="pt")
        scores = model(**batch).logits.softmax(-1)
        labels = scores.argmax(-1).tolist()
elapsed = time.perf_counter() - start
print(f"torch {torch.__version__}: {len(texts)} sentences in {elapsed:.1f} s, "
      f"{len(texts) / elapsed:.1f} sentences/s")
