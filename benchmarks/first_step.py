"""Cost of building an optimizer and taking its first step, against the number of tensors.

The first step checks every gradient against every buffer the step writes
(overlap), allocates the state and builds the plan.  With a sorted index of
the written buffers this grows as n log n; the check used to compare every
gradient with every buffer (quadratic: 5,000 tensors took 2.0 s).

Run: python benchmarks/first_step.py [--max 10000]
"""
import argparse
import statistics
import time

import numpy as np

import etakit


def first_step_seconds(n, repeats=3):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 64, n)
    times = []
    for _ in range(repeats):
        params = [np.zeros(s, np.float32) for s in sizes]
        grads = [np.ones(s, np.float32) for s in sizes]
        t0 = time.perf_counter()
        opt = etakit.Adam(params, lr=1e-3)
        opt.step(grads)
        times.append(time.perf_counter() - t0)
    step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.step(grads)
        step.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.median(step)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max", type=int, default=10_000)
    args = ap.parse_args()
    print(f"{'tensors':>8}  {'build + first step':>18}  {'per tensor':>10}  {'later step':>10}")
    for n in [250, 1000, 2000, 5000, 10_000, 20_000]:
        if n > args.max:
            break
        first, later = first_step_seconds(n)
        print(f"{n:>8}  {first * 1e3:>15.1f} ms  {first / n * 1e6:>7.1f} us  {later * 1e3:>7.2f} ms")


if __name__ == "__main__":
    main()
