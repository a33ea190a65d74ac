"""PyTorch's CPU scaled_dot_product_attention at the shapes of `cargo xtask bench attention`.

Not part of CI: run it by hand next to the Rust bench to compare (`pip install torch`,
`python3 crates/focal-bench/torch_sdpa.py`). b = 1, h = 8, d_h = 64, l = s, f32; the median of
5 timed calls after 2 warm-up calls; FLOPs counted as in the Rust bench (4 b h l s d_h forward,
3.5x that for forward+backward, half under a causal mask).
"""

import time

import torch


def median_time(f, n=5):
    f()
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for length in [512, 2048, 8192]:
        for causal in [False, True]:
            q, k, v = [torch.randn(1, 8, length, 64) for _ in range(3)]
            sdpa = torch.nn.functional.scaled_dot_product_attention
            forward = median_time(lambda: sdpa(q, k, v, is_causal=causal))
            qg, kg, vg = [t.clone().requires_grad_() for t in (q, k, v)]

            def forward_backward():
                sdpa(qg, kg, vg, is_causal=causal).sum().backward()
                qg.grad = kg.grad = vg.grad = None

            both = median_time(forward_backward)
            flops = 4 * 8 * length * length * 64 / (2 if causal else 1)
            print(
                f"l = s = {length}, causal {causal}: forward {forward * 1e3:.1f} ms "
                f"({flops / forward / 1e9:.1f} GFLOP/s); forward+backward {both * 1e3:.1f} ms "
                f"({3.5 * flops / both / 1e9:.1f} GFLOP/s)"
            )


if __name__ == "__main__":
    main()
