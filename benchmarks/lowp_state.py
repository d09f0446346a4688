"""Adam with float32, bfloat16 and 8-bit optimizer state, side by side in one run.

One float32 parameter tensor of N elements (default 50M), the same gradient
every step, 2 threads (``--threads``): etakit with float32, bfloat16 and int8
state, torch.optim.Adam(fused=True) (float32 state) when torch is installed,
and the bandwidth probe (the float32 step's access pattern: read grad, read
and write param and two state buffers, 28 B/element).  Bytes moved per step:
float32 28, bfloat16 20, int8 16 + 2 * 8 / 256 B/element (codes and scales).
``% probe`` is each step's bytes per second over the probe's.  State bytes
per parameter are measured from the optimizer's state arrays.

    PYTHONPATH=src python benchmarks/lowp_state.py [--n 50000000] [--threads 2]
"""
import argparse
import time

import numpy as np

import etakit
from etakit import _core
from etakit.bench import measure


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bnb", action="store_true", help="also bitsandbytes.optim.Adam8bit on CPU (slow)")
    a = ap.parse_args()
    n = a.n
    etakit.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    fns, state_bytes, moved = {}, {}, {}
    for sd in ("float32", "bfloat16", "int8"):
        w = p0.copy()
        opt = etakit.Adam([w], lr=1e-3, state_dtype=sd)
        opt.step([g])
        state_bytes[sd] = sum(v.nbytes for v in opt._state[0].values()) / n
        moved[sd] = 12 + 2 * state_bytes[sd]     # grad read, param read+write, state read+write
        fns[sd] = (lambda o: lambda: o.step([g]))(opt)
    pp = p0.copy()
    plan = _core.Plan(_core.NRULES, 1, 0)
    plan.set_tensor(0, pp, (np.zeros(n, np.float32), np.zeros(n, np.float32), None, None, None, None), 0, 0)
    plan.index_written()
    fns["probe"] = lambda: plan.run([g])
    try:
        import torch
        torch.set_num_threads(a.threads)
        tp = torch.from_numpy(p0.copy()).requires_grad_()
        tp.grad = torch.from_numpy(g.copy())
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        topt.step()
        fns["torch fused"] = topt.step
        state_bytes["torch fused"] = sum(v.numel() * v.element_size() for v in topt.state[tp].values()
                                         if v.numel() == n) / n
        moved["torch fused"] = 28.0
        if a.bnb:
            import bitsandbytes as bnb
            bp = torch.from_numpy(p0.copy()).requires_grad_()
            bp.grad = torch.from_numpy(g.copy())
            bopt = bnb.optim.Adam8bit([bp], lr=1e-3)
            bopt.step()
            fns["bitsandbytes Adam8bit"] = bopt.step
            state_bytes["bitsandbytes Adam8bit"] = sum(v.numel() * v.element_size() for v in bopt.state[bp].values()
                                                       if isinstance(v, torch.Tensor)) / n
            moved["bitsandbytes Adam8bit"] = 12 + 2 * state_bytes["bitsandbytes Adam8bit"]
    except ImportError:
        pass
    t0 = time.perf_counter()
    t = measure(fns, repeats=a.repeats, min_time=0.2)
    probe_bw = 28.0 * n / t["probe"]
    print(f"Adam, one float32 tensor of {n:,} elements, {a.threads} threads, simd {etakit.simd_variant()} "
          f"(measured in {time.perf_counter() - t0:.0f} s)\n")
    print("| state | ms/step | state B/param | B moved/elem | GB/s | % probe | x torch fused | x bnb Adam8bit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in ("float32", "bfloat16", "int8", "torch fused", "bitsandbytes Adam8bit"):
        if k not in t:
            continue
        bw = moved[k] * n / t[k]
        xt = f"{t['torch fused'] / t[k]:.2f}" if "torch fused" in t else "-"
        xb = f"{t['bitsandbytes Adam8bit'] / t[k]:.1f}" if "bitsandbytes Adam8bit" in t else "-"
        print(f"| {k} | {1e3 * t[k]:.1f} | {state_bytes[k]:.3f} | {moved[k]:.2f} | {bw / 1e9:.1f} | "
              f"{100 * bw / probe_bw:.0f}% | {xt} | {xb} |")
    print(f"| probe (28 B/elem) | {1e3 * t['probe']:.1f} | | 28 | {probe_bw / 1e9:.1f} | 100% | | |")


if __name__ == "__main__":
    main()
