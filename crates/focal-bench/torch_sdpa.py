"""PyTorch's CPU scaled_dot_product_attention at the shapes of `cargo xtask bench attention`.

Not part of CI. The Rust bench runs it itself after its own rows, on the same threads, budget
and lengths, and adds its rows to the table (`pip install torch==2.15.0`):

    cargo xtask bench attention --threads 2 --python python3

b = 1, h = 8, d_h = 64, l = s, f32. The statistic is the Rust bench's: one untimed call, then
calls until `--budget` seconds are spent (at least 1, at most 25), the median. FLOPs counted as
in the Rust bench (4 b h l s d_h forward, 3.5x that for forward+backward, half under a causal
mask).
"""

import argparse
import datetime
import json
import time

import torch


def median_time(f, budget, most=25):
    f()
    times = []
    started = time.perf_counter()
    while len(times) < most and (not times or time.perf_counter() - started < budget):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], len(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for length in [int(n) for n in args.lengths.split(",")]:
        for causal in [False, True]:
            q, k, v = [torch.randn(1, 8, length, 64) for _ in range(3)]
            sdpa = torch.nn.functional.scaled_dot_product_attention
            forward, forward_runs = median_time(lambda: sdpa(q, k, v, is_causal=causal), args.budget)
            qg, kg, vg = [t.clone().requires_grad_() for t in (q, k, v)]

            def forward_backward():
                sdpa(qg, kg, vg, is_causal=causal).sum().backward()
                qg.grad = kg.grad = vg.grad = None

            both, both_runs = median_time(forward_backward, args.budget)
            for pass_, seconds, runs in [
                ("forward", forward, forward_runs),
                ("forward+backward", both, both_runs),
            ]:
                rows.append(
                    {"length": length, "causal": causal, "pass": pass_, "seconds": seconds,
                     "runs": runs}
                )
            flops = 4 * 8 * length * length * 64 / (2 if causal else 1)
            print(
                f"l = s = {length}, causal {causal}: forward {forward * 1e3:.1f} ms "
                f"({flops / forward / 1e9:.1f} GFLOP/s); forward+backward {both * 1e3:.1f} ms "
                f"({3.5 * flops / both / 1e9:.1f} GFLOP/s)"
            )
    with open(args.out, "w") as f:
        json.dump(
            {
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "measured": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "rows": rows,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
