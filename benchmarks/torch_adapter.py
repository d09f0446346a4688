"""etakit.torch.AdamW against torch.optim.AdamW (fused=True, foreach, for-loop) and etakit's numpy AdamW.

Two cases: one 50M-element float32 tensor (bandwidth-bound), and the
parameters of a real nn.Module with 200 tensors (a stack of 100 Linear(64, 64)
layers, 416k elements: overhead-bound).  Gradients are set once; each
contender steps the same parameters; medians of interleaved rounds.

Run: python benchmarks/torch_adapter.py [--quick]
"""
import argparse

import torch

import etakit
import etakit.torch as et
from etakit import bench


def contenders(params):
    out = {}
    arrays = [p.detach().numpy() for p in params]
    grads = [p.grad.numpy() for p in params]
    numpy_opt = etakit.AdamW(arrays, lr=1e-4)
    numpy_opt.step(grads)
    out["etakit (numpy)"] = lambda: numpy_opt.step(grads)
    for name, make in [("etakit.torch", lambda ps: et.AdamW(ps, lr=1e-4)),
                       ("torch fused", lambda ps: torch.optim.AdamW(ps, lr=1e-4, fused=True)),
                       ("torch foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-4, foreach=True)),
                       ("torch for-loop", lambda ps: torch.optim.AdamW(ps, lr=1e-4, foreach=False))]:
        opt = make(params)
        opt.step()   # state allocated outside the timed region
        out[name] = opt.step
    return out


def report(title, params, repeats, min_time):
    n = sum(p.numel() for p in params)
    t = bench.measure(contenders(params), repeats=repeats, min_time=min_time)
    base = t["etakit.torch"]
    print(f"{title}: {len(params)} tensors, {n:,} elements")
    for name, v in t.items():
        print(f"  {name:<15} {v * 1e6:10.1f} us/step   {v / base:6.2f}x etakit's time")
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(bench.machine_line())
    repeats = 3 if args.quick else 9
    big = torch.nn.Parameter(torch.randn(5_000_000 if args.quick else 50_000_000))
    big.grad = torch.randn_like(big) * 1e-3
    report("one large tensor", [big], repeats, 0.2)
    del big
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(100)])
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    report("nn.Module (100 x Linear(64, 64))", params, repeats, 0.1)


if __name__ == "__main__":
    main()
