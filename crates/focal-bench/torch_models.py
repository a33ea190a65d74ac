"""PyTorch's side of `cargo xtask bench models`: the same workloads, on the same threads, f32.

Not part of CI. The Rust bench runs it itself, after its own measurements, when given an
interpreter with the pinned packages (torch 2.15.0, transformers 4.57.1,
sentence-transformers 6.2.0):

    cargo xtask bench models --minilm DIR --python PYTHON

It passes `--threads`, `--budget`, the random GPT-2-small directory it wrote, the prompt and
`--out`; this script writes its figures there (workload name -> figure in the Rust table's
unit) with the greedy tokens transformers decoded, which the bench compares with Focal's.

One statistic per row, as the Rust side measures it:

- encoder layer: `nn.TransformerEncoderLayer(512, 8, 2048, dropout=0, batch_first=True)`
  (post-norm, ReLU, as Focal's), b 8, l 128; forward in `eval()` under `inference_mode`
  (PyTorch's fused fast path), and a training step (forward, MSE loss against a random target,
  backward, AdamW). One untimed run, then runs until `--budget` seconds are spent (at least 1,
  at most 25); the median.
- GPT-2-small: `GPT2LMHeadModel` from the Rust bench's directory, `generate` greedy, the given
  16-token prompt, exactly `--new-tokens` tokens (`min_new_tokens`), KV cache on. One untimed
  4-token decode, then the median rate of `--runs` decodes.
- MiniLM: `SentenceTransformer(DIR).encode(sentences, batch_size=32)` on
  `crates/focal-bench/sentences.txt`, tokenisation included. One untimed pass, then the
  median rate of `--runs` passes.
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


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def median_seconds(f, budget, most=25):
    """As the Rust bench's `measure`: one untimed run, then until the budget is spent."""
    f()
    times = []
    started = time.perf_counter()
    while len(times) < most and (not times or time.perf_counter() - started < budget):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return median(times)


def encoder_rows(budget):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0, batch_first=True)
    x = torch.randn(8, 128, 512)
    layer.eval()

    def forward():
        with torch.inference_mode():
            layer(x)

    forward_ms = median_seconds(forward, budget) * 1e3
    layer.train()
    target = torch.randn(8, 128, 512)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss = ((layer(x) - target) ** 2).mean()
        loss.backward()
        optimizer.step()

    train_ms = median_seconds(step, budget) * 1e3
    return {ENCODER_FORWARD: forward_ms, ENCODER_TRAIN: train_ms}


def gpt2_row(directory, prompt, new_tokens, runs):
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    prompt = torch.tensor([prompt])

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
    rates, tokens = [], None
    for _ in range(runs):
        rate, tokens = decode(new_tokens)
        rates.append(rate)
    return {GPT2_DECODE: median(rates)}, tokens


def minilm_row(directory, runs):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(directory, device="cpu")
    with open(os.path.join(HERE, "sentences.txt")) as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    model.encode(sentences, batch_size=32)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        model.encode(sentences, batch_size=32)
        rates.append(len(sentences) / (time.perf_counter() - started))
    return {MINILM: median(rates)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--gpt2", required=True)
    parser.add_argument("--prompt", required=True, help="token ids, comma-separated")
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--minilm")
    parser.add_argument("--only", default="", help="encoder,training,decoding,minilm")
    args = parser.parse_args()
    only = [w for w in args.only.split(",") if w]

    def runs(workload):
        return not only or workload in only

    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    assert transformers.__version__ == "4.57.1", transformers.__version__
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads")
    figures, tokens = {}, None
    if runs("encoder") or runs("training"):
        figures.update(encoder_rows(args.budget))
    if runs("decoding"):
        prompt = [int(t) for t in args.prompt.split(",")]
        row, tokens = gpt2_row(args.gpt2, prompt, args.new_tokens, args.runs)
        figures.update(row)
    if args.minilm and runs("minilm"):
        figures.update(minilm_row(args.minilm, args.runs))
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    with open(args.out, "w") as f:
        json.dump(
            {
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "measured": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "figures": figures,
                "gpt2_tokens": tokens,
            },
            f,
            indent=1,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
