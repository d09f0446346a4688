"""etakit.Muon against torch.optim.Muon: one step of a float32 matrix.

Muon's step is matrix products (5 Newton-Schulz iterations of three each),
so it is bound by the BLAS, not by memory bandwidth, and is not in
``python -m etakit.bench``.  Contenders, interleaved, medians:

- ``etakit``: etakit.Muon (its C passes plus numpy's BLAS, float32);
- ``NS only``: etakit.reference.zeropower_via_newtonschulz alone (the BLAS part);
- ``torch``: torch.optim.Muon as shipped (orthogonalises in bfloat16: fast
  where the CPU has bfloat16 matrix units, AMX or AVX512-BF16);
- ``torch f32``: torch.optim.Muon with its bfloat16 cast switched off (the
  same arithmetic as etakit, on torch's BLAS).

torch runs with as many threads as numpy's BLAS (threadpoolctl) when known.
Run: python benchmarks/muon.py [--sizes 1024 2048] [--repeats 5]
"""
import argparse

import numpy as np

import etakit
from etakit import bench, reference


def contenders(n, seed=0):
    import torch
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, n), dtype=np.float32)
    g = rng.standard_normal((n, n), dtype=np.float32)
    opt = etakit.Muon([p.copy()], lr=1e-3)
    out = {"etakit": lambda: opt.step([g]), "NS only": lambda: reference.zeropower_via_newtonschulz(g)}
    w = torch.nn.Parameter(torch.from_numpy(p.copy()))
    w.grad = torch.from_numpy(g.copy())
    topt = torch.optim.Muon([w], lr=1e-3)
    out["torch"] = topt.step
    w32 = torch.nn.Parameter(torch.from_numpy(p.copy()))
    w32.grad = torch.from_numpy(g.copy())
    t32 = torch.optim.Muon([w32], lr=1e-3)
    bf16 = torch.Tensor.bfloat16

    def step_f32():
        torch.Tensor.bfloat16 = lambda self: self.clone()
        try:
            t32.step()
        finally:
            torch.Tensor.bfloat16 = bf16
    out["torch f32"] = step_f32
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import torch
    try:
        from threadpoolctl import threadpool_info
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        if blas:
            torch.set_num_threads(blas[0])
    except ImportError:
        pass
    print(bench.machine_line())
    for n in args.sizes:
        t = bench.measure(contenders(n), repeats=args.repeats, min_time=0.2)
        base = t["etakit"]
        print(f"{n} x {n} float32:")
        for name, v in t.items():
            print(f"  {name:<10} {v * 1e3:9.1f} ms/step   {v / base:5.2f}x etakit's time")


if __name__ == "__main__":
    main()
