"""Schedule benchmarks.

1. ``values()`` over 10M steps, against the same formula vectorised in numpy
   and a Python loop over a closed-form function.
2. The cost a schedule adds to ``opt.step`` on a 1,000-element Adam step
   (target: at most 0.5 us more than a constant learning rate).

Medians of interleaved runs.  Run: python benchmarks/schedules.py [--quick]
"""
import argparse
import math
import time

import numpy as np

import etakit
from etakit import bench
from etakit import schedules as S


def numpy_warmup_cosine(n, peak, w, total):
    k = np.arange(n, dtype=np.float64)
    progress = np.minimum((k - w) / max(1, total - w), 1.0)
    out = peak * 0.5 * (1.0 + np.cos(np.pi * progress))
    warm = k < w
    out[warm] = peak * k[warm] / max(1, w)
    return out


def python_warmup_cosine(k, peak, w, total):
    if k < w:
        return peak * k / max(1, w)
    progress = min((k - w) / max(1, total - w), 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def values_table(n, repeats):
    peak, w, total = 3e-4, 500, n
    s = S.warmup_cosine(peak, w, total)
    np.testing.assert_allclose(s.values(1000), numpy_warmup_cosine(1000, peak, w, total), rtol=1e-12)
    t = bench.measure({
        "etakit values()": lambda: s.values(n),
        "numpy vectorised": lambda: numpy_warmup_cosine(n, peak, w, total),
    }, repeats=repeats, min_time=0.05)
    t0 = time.perf_counter()
    py_n = min(n, 1_000_000)
    [python_warmup_cosine(k, peak, w, total) for k in range(py_n)]
    t["Python loop"] = (time.perf_counter() - t0) * n / py_n
    print(f"warmup_cosine over {n:,} steps ({etakit.get_num_threads()} threads; the Python loop timed on "
          f"{py_n:,} steps and scaled)")
    base = t["etakit values()"]
    for name, v in t.items():
        print(f"  {name:<18} {v * 1e3:9.1f} ms   {v / n * 1e9:7.2f} ns/step   {v / base:6.1f}x etakit")


def step_overhead(repeats):
    p = np.zeros(1000, dtype=np.float32)
    g = [np.full(1000, 1e-3, dtype=np.float32)]
    variants = {
        "constant lr": 1e-3,
        "cosine": S.cosine(1e-3, 10**9),
        "warmup_cosine": S.warmup_cosine(1e-3, 100, 10**9),
        "join(warmup, cosine, constant)": S.join([S.linear(0.0, 1e-3, 100), S.cosine(1e-3, 10**8),
                                                  S.constant(1e-5)], [100, 10**8 + 100]),
        "Python callable": lambda k: 1e-3,
    }
    steps = {}
    for name, lr in variants.items():
        opt = etakit.Adam([p.copy()], lr=lr)
        opt.step(g)
        steps[name] = (lambda o: (lambda: o.step(g)))(opt)
    t = bench.measure(steps, repeats=repeats, min_time=0.05)
    print("Adam opt.step on 1,000 float32 elements")
    for name, v in t.items():
        print(f"  {name:<32} {v * 1e6:6.3f} us   +{(v - t['constant lr']) * 1e6:6.3f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(bench.machine_line())
    values_table(1_000_000 if args.quick else 10_000_000, 3 if args.quick else 7)
    step_overhead(5 if args.quick else 11)


if __name__ == "__main__":
    main()
