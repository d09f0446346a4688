"""AdamW with global-norm clipping, a non-finite check and an EMA of the parameters, fused, against PyTorch.

Two cases, float32, side by side in one run (interleaved medians): one tensor
of N elements (default 50M) and 200 mixed tensors (``etakit.bench.mixed_sizes``,
about 18M elements).  Rows:

- etakit AdamW: the step alone (28 B/element);
- etakit AdamW + clip: ``global_clipnorm`` (a norm pass over the gradients,
  4 B/element, and the non-finite check it carries, nonfinite="raise");
- etakit AdamW + EMA: ``ema_decay`` (the EMA read and written in the step's
  pass, 8 B/element more);
- etakit all: clip + non-finite check + EMA (4 + 36 B/element);
- torch: ``clip_grad_norm_`` + ``AdamW(fused=True)`` + ``torch._foreach_lerp_``
  of the EMA (timm ModelEmaV3's update), and each of the three alone;
- probe: the bandwidth probe (the step's access pattern with trivial
  arithmetic, 28 B/element): what the machine moves at best.

"extra" is the time a pass adds to the etakit step; "% probe" is the bytes
that pass moves per second over the probe's.

    PYTHONPATH=src python benchmarks/loop_passes.py [--n 50000000] [--threads 2]
"""
import argparse
import time

import numpy as np

import etakit
from etakit import _core
from etakit.bench import measure, mixed_sizes


def case(sizes, threads, repeats):
    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    g = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in sizes]
    n = sum(sizes)
    fns = {}
    opts = {"AdamW": {}, "AdamW + clip": dict(global_clipnorm=1e-3, nonfinite="raise"),
            "AdamW + EMA": dict(ema_decay=0.999), "all": dict(global_clipnorm=1e-3, nonfinite="raise",
                                                              ema_decay=0.999)}
    for name, kw in opts.items():
        w = [p.copy() for p in p0]
        opt = etakit.AdamW(w, lr=1e-3, weight_decay=1e-2, **kw)
        opt.step(g)
        fns[name] = (lambda o: lambda: o.step(g))(opt)
    pp = [p.copy() for p in p0]
    plan = _core.Plan(_core.NRULES, len(pp), 0)
    for i, p in enumerate(pp):
        plan.set_tensor(i, p, (np.zeros_like(p), np.zeros_like(p), None, None, None, None), 0, 0)
    plan.index_written()
    fns["probe"] = lambda: plan.run(g)
    import torch
    torch.set_num_threads(threads)
    tp = [torch.from_numpy(p.copy()).requires_grad_() for p in p0]
    for t, x in zip(tp, g):
        t.grad = torch.from_numpy(x.copy())
    topt = torch.optim.AdamW(tp, lr=1e-3, weight_decay=1e-2, fused=True)
    topt.step()
    ema = [t.detach().clone() for t in tp]
    pd = [t.detach() for t in tp]

    def t_clip():
        torch.nn.utils.clip_grad_norm_(tp, 1e-3)

    def t_ema():
        torch._foreach_lerp_(ema, pd, 1.0 - 0.999)

    def t_all():
        t_clip()
        topt.step()
        t_ema()
    fns.update({"torch all": t_all, "torch clip_grad_norm_": t_clip, "torch AdamW(fused)": topt.step,
                "torch foreach lerp EMA": t_ema})
    with torch.no_grad():
        t = measure(fns, repeats=repeats, min_time=0.2)
    probe_bw = 28.0 * n / t["probe"]
    return n, t, probe_bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    etakit.set_num_threads(a.threads)
    for label, sizes in ((f"one tensor of {a.n:,}", [a.n]), ("200 mixed tensors", mixed_sizes(count=200))):
        t0 = time.perf_counter()
        n, t, bw = case(sizes, a.threads, a.repeats)
        print(f"\n### {label} ({n:,} float32 elements), {a.threads} threads, simd {etakit.simd_variant()} "
              f"(measured in {time.perf_counter() - t0:.0f} s)\n")
        print("| | ms/step | B/elem | GB/s | % probe |")
        print("|---|---:|---:|---:|---:|")
        rows = [("probe", 28), ("AdamW", 28), ("AdamW + clip", 32), ("AdamW + EMA", 36), ("all", 40),
                ("torch AdamW(fused)", 28), ("torch clip_grad_norm_", 8), ("torch foreach lerp EMA", 12),
                ("torch all", 48)]
        for k, b in rows:
            print(f"| {'etakit ' + k if not k.startswith(('torch', 'probe')) else k} | {t[k] * 1e3:.2f} | {b} | "
                  f"{b * n / t[k] / 1e9:.1f} | {100 * b * n / t[k] / bw:.0f}% |")
        clip = t["AdamW + clip"] - t["AdamW"]
        ema = t["AdamW + EMA"] - t["AdamW"]
        print(f"\n- etakit all vs torch all: **{t['torch all'] / t['all']:.2f}x** faster "
              f"({t['all'] * 1e3:.1f} ms vs {t['torch all'] * 1e3:.1f} ms)")
        print(f"- clipping adds {clip * 1e3:.2f} ms for its 4 B/elem: {100 * 4 * n / clip / bw:.0f}% of the probe's "
              f"bandwidth (torch's clip_grad_norm_: {t['torch clip_grad_norm_'] * 1e3:.2f} ms)")
        print(f"- the EMA adds {ema * 1e3:.2f} ms for its 8 B/elem: {100 * 8 * n / ema / bw:.0f}% of the probe's "
              f"bandwidth (torch's foreach lerp: {t['torch foreach lerp EMA'] * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
