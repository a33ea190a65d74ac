"""PyTorch's side of `cargo xtask bench models`: the same workloads, 2 threads, f32.

Not part of CI. Run it in the same hour as the Rust bench, after it (the Rust bench writes the
random GPT-2-small directory both load, and the tokens Focal decoded):

    cargo xtask bench models --minilm DIR
    python3 crates/focal-bench/torch_models.py --minilm DIR
    cargo xtask bench models --minilm DIR   # again: now the table has PyTorch's column

It writes `target/bench/models_torch.json` (workload name -> figure in the Rust table's unit).
Versions are pinned: torch 2.15.0, transformers 4.57.1, sentence-transformers 6.2.0.

- encoder layer: `nn.TransformerEncoderLayer(512, 8, 2048, dropout=0, batch_first=True)`
  (post-norm, ReLU, as Focal's), b 8, l 128; forward in `eval()` under `inference_mode`
  (PyTorch's fused fast path), and a training step (forward, MSE loss against a random target,
  backward, AdamW). Median of repeated runs after warm-up.
- GPT-2-small: `GPT2LMHeadModel` from the Rust bench's directory, `generate` greedy, the same
  16-token prompt, exactly `--new-tokens` tokens (`min_new_tokens`), KV cache on.
- MiniLM: `SentenceTransformer(DIR).encode(sentences, batch_size=32)` on
  `crates/focal-bench/sentences.txt`, tokenisation included, best of 3 after a warm-up.
"""

import argparse
import datetime
import json
import os
import time

import torch
import transformers

ENCODER_FORWARD = "encoder layer forward (d 512, 8 heads, ffn 2048, b 8, l 128)"
ENCODER_TRAIN = "encoder layer training step (forward, backward, AdamW)"
GPT2_DECODE = "GPT-2-small greedy decoding after a 16-token prompt"
MINILM = "all-MiniLM-L6-v2 embeddings, 256 sentences, batch 32"

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def median_seconds(f, budget=2.0, most=25):
    f()
    f()
    times = []
    started = time.perf_counter()
    while len(times) < most and (not times or time.perf_counter() - started < budget):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def encoder_rows():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0, batch_first=True)
    x = torch.randn(8, 128, 512)
    layer.eval()

    def forward():
        with torch.inference_mode():
            layer(x)

    forward_ms = median_seconds(forward) * 1e3
    layer.train()
    target = torch.randn(8, 128, 512)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss = ((layer(x) - target) ** 2).mean()
        loss.backward()
        optimizer.step()

    train_ms = median_seconds(step) * 1e3
    return {ENCODER_FORWARD: forward_ms, ENCODER_TRAIN: train_ms}


def gpt2_row(directory, new_tokens):
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    with open(os.path.join(directory, "focal_tokens.json")) as f:
        focal = json.load(f)
    prompt = torch.tensor([focal["prompt"]])

    def decode(n):
        with torch.inference_mode():
            started = time.perf_counter()
            out = model.generate(
                prompt,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=50256,
            )
            return n / (time.perf_counter() - started), out[0, prompt.shape[1] :].tolist()

    decode(4)
    rate, tokens = decode(new_tokens)
    same = sum(a == b for a, b in zip(tokens, focal["tokens"]))
    agree = 0
    for a, b in zip(tokens, focal["tokens"]):
        if a != b:
            break
        agree += 1
    print(f"GPT-2 greedy tokens equal to Focal's: {same} of {len(tokens)} (first {agree} in a row)")
    return {GPT2_DECODE: rate}


def minilm_row(directory):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(directory, device="cpu")
    with open(os.path.join(HERE, "sentences.txt")) as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    model.encode(sentences, batch_size=32)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        model.encode(sentences, batch_size=32)
        best = max(best, len(sentences) / (time.perf_counter() - started))
    return {MINILM: best}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpt2", default=os.path.join(ROOT, "target/bench/gpt2-small-random"))
    parser.add_argument("--minilm")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--out", default=os.path.join(ROOT, "target/bench/models_torch.json"))
    args = parser.parse_args()

    assert transformers.__version__ == "4.57.1", transformers.__version__
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, 2 threads")
    figures = encoder_rows()
    figures.update(gpt2_row(args.gpt2, args.new_tokens))
    if args.minilm:
        figures.update(minilm_row(args.minilm))
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    with open(args.out, "w") as f:
        json.dump({"written": written, "figures": figures}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
