"""The starting point of the small GPT-2-style model that docs/interpretability.md looks inside:
a byte-level BPE tokenizer (2,000 tokens) trained on the finance headlines of
examples/finance/generate_headlines.py, and a freshly initialised GPT-2 (4 layers, 4 heads,
width 128, 64 positions) saved as a Hugging Face directory. Focal then trains it on the
headlines itself (`focal train --task lm`, in docs/interpretability.md).

Run from the repository root:

    pip install torch==2.15.0 transformers==4.57.1 tokenizers==0.22.2
    python3 examples/finance/generate_headlines.py /tmp/fin
    python3 docs/interpretability/make_small_gpt2.py /tmp/fin/finance_train.csv /tmp/gpt2-start
"""

import csv
import sys
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

rows, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
texts = [row["text"] for row in csv.DictReader(open(rows))]

bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(texts, vocab_size=2000, min_frequency=2,
                        special_tokens=["<|endoftext|>"])
fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                               eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                               model_max_length=64)
fast.save_pretrained(out)

torch.manual_seed(0)
config = GPT2Config(vocab_size=fast.vocab_size, n_positions=64, n_embd=128, n_layer=4, n_head=4,
                    bos_token_id=0, eos_token_id=0)
GPT2LMHeadModel(config).save_pretrained(out, safe_serialization=True)
print(f"{out}: vocabulary {fast.vocab_size}, {sum(p.numel() for p in GPT2LMHeadModel(config).parameters())} parameters")
