"""Low precision on the lr_find quality problems: final losses with bfloat16 and 8-bit optimizer state,
and with bfloat16 parameters, against float32, at the learning rate that is best for float32.

The problems are benchmarks/lr_find_quality.py's (quadratics, least squares, softmax and logistic
regression, MLPs; SGD, momentum, Adam, AdamW, RMSprop, Adagrad), run in float32 (float64 problem data
is cast; gradients are cast to the parameters' dtype; forward and backward passes of bfloat16
parameters run in float32 from their values).  Per problem and seed, a constant-rate grid (1e-5 to 10,
8 per decade) in float32 gives the best rate and the best final loss; every format then trains at that
rate from the same start and on the same minibatches, and its final full loss is scored as normalised
regret (loss - best) / (initial - best) against the float32 grid's best: 0 is as good as float32 at its
best rate, 1 is no progress.  A run that ends non-finite or above its start is a divergence.
int8 state is used for every tensor (``min_8bit_size=0``: these problems' tensors are below 4096).

    PYTHONPATH=src python benchmarks/lowp_lr_find_quality.py [--seeds 2] [--jobs 2] [--markdown]
"""
import argparse
import math
import os
import sys
import time

import numpy as np

import etakit

sys.path.insert(0, os.path.dirname(__file__))
import lr_find_quality as Q

FORMATS = [
    ("float32", {}, False),
    ("bfloat16 state, nearest", {"state_dtype": "bfloat16"}, False),
    ("bfloat16 state, stochastic", {"state_dtype": "bfloat16", "stochastic_rounding": True}, False),
    ("int8 state", {"state_dtype": "int8", "min_8bit_size": 0}, False),
    ("bfloat16 parameters, Kahan", {}, True),
    ("bfloat16 parameters, stochastic", {"stochastic_rounding": True}, True),
    ("bfloat16 parameters, nearest", {"kahan": False}, True),
]


def train(p, lr, seed, kw, bf16):
    import ml_dtypes
    dt = ml_dtypes.bfloat16 if bf16 else np.float32
    params = [np.asarray(x, dtype=np.float32).astype(dt) for x in p.init(seed)]
    opt = p.optimizer(params, lr=lr, **p.kwargs, **kw)
    f = p.sampler(seed)
    with np.errstate(all="ignore"):
        for _ in range(p.steps):
            loss, grads = f([x.astype(np.float32) for x in params] if bf16 else params)
            if not math.isfinite(loss):
                return math.inf
            opt.step([np.asarray(g, dtype=np.float32).astype(dt) for g in grads])
        final = p.full_loss([x.astype(np.float32) for x in params])
    return final if math.isfinite(final) else math.inf


def run_one(args):
    i, seed = args
    etakit.set_num_threads(1)
    p = Q.problems()[i]
    initial = p.full_loss([np.asarray(x, dtype=np.float32) for x in p.init(seed)])
    grid, bad = [], 0
    for lr in Q.GRID:
        loss = math.inf if bad >= 3 else train(p, lr, seed, {}, False)
        bad = bad + 1 if not loss <= initial else 0
        grid.append(loss)
    j = int(np.argmin(grid))
    best, lr = float(grid[j]), float(Q.GRID[j])
    out = {}
    for name, kw, bf16 in FORMATS:
        loss = grid[j] if name == "float32" else train(p, lr, seed, kw, bf16)
        diverged = not loss <= initial
        out[name] = (1.0 if diverged else (loss - best) / (initial - best), diverged, loss)
    return i, seed, lr, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ps = Q.problems()
    tasks = [(i, s) for i in range(len(ps)) for s in range(args.seeds)]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=args.jobs) as ex:
            results = list(ex.map(run_one, tasks))
    else:
        results = [run_one(t) for t in tasks]
    if not args.markdown:
        for i, seed, lr, out in results:
            print(f"{ps[i].name} seed {seed} lr {lr:.3g}: " +
                  "; ".join(f"{n} {r:.4f}{' DIV' if d else ''}" for n, (r, d, _) in out.items()), file=sys.stderr)
    print("| format | mean regret | max regret | problems where regret > 0.05 | divergences (runs) |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in FORMATS:
        per = {}
        for i, _, _, out in results:
            per.setdefault(i, []).append(out[name][0])
        means = [float(np.mean(v)) for v in per.values()]
        divs = sum(out[name][1] for _, _, _, out in results)
        print(f"| {name} | {np.mean(means):.4f} | {np.max(means):.4f} | {sum(m > 0.05 for m in means)} of "
              f"{len(means)} | {divs} ({len(results)}) |")
    print(f"\n({len(ps)} problems x {args.seeds} seeds, regret per problem averaged over seeds; "
          f"{time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
