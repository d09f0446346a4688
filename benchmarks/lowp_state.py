"""Adam with float32, bfloat16 and 8-bit optimizer state, side by side in one run, 1 and 2 threads.

One float32 parameter tensor of N elements (default 50M; ``--mixed``: 200 tensors of mixed sizes
summing to N, as etakit.bench.mixed_sizes), the same gradient every step: etakit with float32,
bfloat16 (nearest and stochastic rounding) and int8 state, torch.optim.Adam(fused=True) (float32
state) when torch is installed, bitsandbytes.optim.Adam8bit with ``--bnb``, and the bandwidth probe
(the float32 step's access pattern: read grad, read and write param and two state buffers,
28 B/element).  For each thread count in turn, the contenders are sampled in the same interleaved
rounds (etakit.bench.measure, medians), so the ratios compare like with like on a noisy machine.

Bytes moved per step: float32 28, bfloat16 20, int8 16 + 2 * 8 / 256 B/element (codes and scales).
``% probe`` is each step's bytes per second over the probe's at the same thread count.
``core-cycles/elem`` is time x threads x clock / N, the clock being the CPU's nominal frequency
(``--ghz`` to set it): the work per element summed over the cores, so that a compute bound shows as
a constant across thread counts and a bandwidth bound does not.

``--bf16-params``: bfloat16 parameters and gradients instead (ml_dtypes.bfloat16), etakit with
float32 state and Kahan compensation (the default), bfloat16 state with Kahan, to nearest and
stochastic, int8 state with Kahan, against torch.optim.Adam(fused=True) on torch.bfloat16 parameters
(which keeps bfloat16 state and rounds to nearest).  Bytes moved: grad 2, param 2 + 2, state and the
Kahan compensation read and written.

    PYTHONPATH=src python benchmarks/lowp_state.py [--n 50000000] [--threads 1,2] [--mixed] [--bnb] [--bf16-params]
"""
import argparse
import re
import time

import numpy as np

import etakit
from etakit import _core
from etakit.bench import measure, mixed_sizes


def nominal_ghz():
    """The CPU's nominal clock (cpufreq's maximum, else /proc/cpuinfo's 'cpu MHz'), or None."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"cpu MHz\s*:\s*([0-9.]+)", f.read())
        return float(m.group(1)) / 1e3 if m else None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mixed", action="store_true", help="200 tensors of mixed sizes summing to N")
    ap.add_argument("--bnb", action="store_true", help="also bitsandbytes.optim.Adam8bit on CPU (slow)")
    ap.add_argument("--ghz", type=float, default=None, help="clock for core-cycles/elem (default: nominal)")
    ap.add_argument("--bf16-params", action="store_true", help="bfloat16 parameters and gradients")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    ghz = a.ghz or nominal_ghz()
    sizes = mixed_sizes(a.n, count=200) if a.mixed else [a.n]
    n = sum(sizes)
    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    g = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in sizes]
    steps, state_bytes, moved = {}, {}, {}
    modes = (("float32", {}), ("bfloat16", dict(state_dtype="bfloat16")),
             ("bfloat16 stochastic", dict(state_dtype="bfloat16", stochastic_rounding=True)),
             ("int8", dict(state_dtype="int8")))
    pb = gb = None
    if a.bf16_params:
        import ml_dtypes
        pb = [w.astype(ml_dtypes.bfloat16) for w in p0]
        gb = [x.astype(ml_dtypes.bfloat16) for x in g]
        modes = (("bf16 params, float32 state, Kahan", {}),
                 ("bf16 params, bfloat16 state, Kahan", dict(state_dtype="bfloat16")),
                 ("bf16 params, bfloat16 state, nearest", dict(state_dtype="bfloat16", kahan=False)),
                 ("bf16 params, bfloat16 state, stochastic", dict(state_dtype="bfloat16", stochastic_rounding=True)),
                 ("bf16 params, int8 state, Kahan", dict(state_dtype="int8")))
    for name, kw in modes:
        grads = gb if a.bf16_params else g
        opt = etakit.Adam([w.copy() for w in (pb if a.bf16_params else p0)], lr=1e-3, **kw)
        opt.step(grads)
        state_bytes[name] = sum(v.nbytes for st in opt._state for v in st.values()) / n
        # grad read, param read+write, state (and Kahan compensation) read+write
        moved[name] = (6 if a.bf16_params else 12) + 2 * state_bytes[name]
        steps[name] = (lambda o, gr: lambda: o.step(gr))(opt, grads)
    pp = [w.copy() for w in p0]
    plan = _core.Plan(_core.NRULES, len(pp), 0)
    for i, w in enumerate(pp):
        plan.set_tensor(i, w, (np.zeros_like(w), np.zeros_like(w), None, None, None, None), 0, 0)
    plan.index_written()
    steps["probe"] = lambda: plan.run(g)
    moved["probe"] = 28.0
    torch = None
    try:
        import torch
    except ImportError:
        pass
    if torch is not None:
        tps = [torch.from_numpy(w.copy()).requires_grad_() for w in p0]
        for t, gi in zip(tps, g):
            t.grad = torch.from_numpy(gi.copy())
        if a.bf16_params:
            tps = [t.detach().bfloat16().requires_grad_() for t in tps]
            for t, gi in zip(tps, g):
                t.grad = torch.from_numpy(gi.copy()).bfloat16()
        topt = torch.optim.Adam(tps, lr=1e-3, fused=True)
        topt.step()
        steps["torch fused"] = topt.step
        state_bytes["torch fused"] = 4.0 if a.bf16_params else 8.0
        moved["torch fused"] = 14.0 if a.bf16_params else 28.0
        if a.bnb:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import bitsandbytes as bnb
            bps = [torch.from_numpy(w.copy()).requires_grad_() for w in p0]
            for t, gi in zip(bps, g):
                t.grad = torch.from_numpy(gi.copy())
            bopt = bnb.optim.Adam8bit(bps, lr=1e-3)
            bopt.step()
            steps["bitsandbytes Adam8bit"] = bopt.step
            state_bytes["bitsandbytes Adam8bit"] = sum(
                v.numel() * v.element_size() for st in bopt.state.values() for k, v in st.items()
                if isinstance(v, torch.Tensor) and not k.startswith("qmap")) / n
            moved["bitsandbytes Adam8bit"] = 12 + 2 * state_bytes["bitsandbytes Adam8bit"]

    t0 = time.perf_counter()
    times = {}
    for t in threads:      # one thread count at a time (setting it per call costs torch a pool rebuild)
        etakit.set_num_threads(t)
        if torch is not None:
            torch.set_num_threads(t)
        times.update({(k, t): v for k, v in measure(steps, repeats=a.repeats, min_time=0.2).items()})
    dt = "bfloat16" if a.bf16_params else "float32"
    what = f"200 {dt} tensors, {n:,} elements in all" if a.mixed else f"one {dt} tensor of {n:,} elements"
    print(f"Adam, {what}, simd {etakit.simd_variant()}, threads {a.threads}, clock {ghz or '?'} GHz "
          f"(measured in {time.perf_counter() - t0:.0f} s, medians of {a.repeats} interleaved rounds)\n")
    print("| state | threads | ms/step | state B/param | B moved/elem | GB/s | % probe | ns/elem | "
          "core-cycles/elem | x torch fused | x bnb Adam8bit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in threads:
        probe_bw = 28.0 * n / times[("probe", t)]
        for k in steps:
            s = times[(k, t)]
            bw = moved[k] * n / s
            xt = f"{times[('torch fused', t)] / s:.2f}" if ("torch fused", t) in times else "-"
            xb = f"{times[('bitsandbytes Adam8bit', t)] / s:.1f}" if ("bitsandbytes Adam8bit", t) in times else "-"
            cyc = f"{s * t * ghz * 1e9 / n:.2f}" if ghz else "-"
            sb = f"{state_bytes[k]:.3f}" if k in state_bytes else ""
            print(f"| {k} | {t} | {1e3 * s:.1f} | {sb} | {moved[k]:.2f} | {bw / 1e9:.1f} | "
                  f"{100 * bw / probe_bw:.0f}% | {1e9 * s / n:.3f} | {cyc} | {xt} | {xb} |")


if __name__ == "__main__":
    main()
