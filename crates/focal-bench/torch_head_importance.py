"""PyTorch baseline for `focal heads`: the head importance of Michel et al. (2019) of a
BertForSequenceClassification directory on a labelled rows file (text,label), as Focal computes
it: batches of 32 in file order, each row with its own head mask so that one backward pass gives
every row's |d loss / d mask|, dropout off, 2 threads. Prints rows per second and the
normalised scores' first row; compare with `/usr/bin/time -v focal heads --model DIR --data
FILE --batch-size 32 --max-length 64` in the same hour.

transformers' `head_mask` is one mask for the whole batch; a per-row mask is passed here the way
its eager attention applies it (`attention_probs * head_mask`, broadcast over the batch), by
giving each layer a [b, heads, 1, 1] mask.

    pip install torch==2.15.0 transformers==4.57.1
    python3 crates/focal-bench/torch_head_importance.py --model DIR --data FILE
"""

import argparse
import csv
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--max-length", type=int, default=64)
args = parser.parse_args()
torch.set_num_threads(2)
model = AutoModelForSequenceClassification.from_pretrained(args.model,
                                                           attn_implementation="eager").eval()
tokenizer = AutoTokenizer.from_pretrained(args.model)
rows = list(csv.DictReader(open(args.data)))
config = model.config
layers, heads = config.num_hidden_layers, config.num_attention_heads
total = torch.zeros(layers, heads)
start = time.perf_counter()
for i in range(0, len(rows), args.batch_size):
    batch = rows[i:i + args.batch_size]
    inputs = tokenizer([r["text"] for r in batch], padding=True, truncation=True,
                       max_length=args.max_length, return_tensors="pt")
    labels = torch.tensor([config.label2id[r["label"]] for r in batch])
    mask = torch.ones(len(batch), layers, heads, requires_grad=True)
    # transformers takes head_mask [layers, b, heads, 1, 1] per layer after its own reshaping.
    head_mask = mask.permute(1, 0, 2)[:, :, :, None, None]
    logits = model(**inputs, head_mask=head_mask).logits
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    loss.backward()
    total += mask.grad.abs().sum(0)
elapsed = time.perf_counter() - start
importance = total / len(rows)
normalised = importance / importance.norm(dim=-1, keepdim=True)
print(f"torch {torch.__version__}: {len(rows)} rows in {elapsed:.1f} s, "
      f"{len(rows) / elapsed:.1f} rows/s")
print("layer 0, normalised:", " ".join(f"{v:.3f}" for v in normalised[0].tolist()))
