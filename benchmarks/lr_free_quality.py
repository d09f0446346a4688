"""How good are the learning-rate-free optimizers with their defaults?  Against a grid search.

On a suite of small problems (quadratics 0.5 x'Ax in 50 dimensions with top
curvature L and condition number cond from 1 to 1e4, with and without
gradient noise; least squares; logistic regression and a small MLP on
scikit-learn's bundled digits and breast-cancer data), each
learning-rate-free optimizer of etakit is run with its defaults (no learning
rate given), and side by side, on the same problems, starting points and
minibatch orders (seeds), its reference package in torch (prodigyopt,
dadaptation, schedulefree, dog), fed the very same gradients.  Both are
compared with the best of a grid over constant-rate Adam and SGD with
momentum 0.9, for the same number of steps:

    normalised regret = (loss(method) - loss(best of grid)) / (loss(initial) - loss(best of grid))

where a loss is the full-data training loss after the budget (schedule-free
methods: at their averaged point x, in eval mode), averaged over the seeds;
the best of the grid is the learning rate whose seed-averaged loss is least.
0 is as good as the best tuned constant rate, 1 is no progress, below 0 is
better than the grid.  A run that produces a non-finite loss or ends above
its initial loss is a divergence: counted in its own column and left out of
the regret figures.  Everything runs in float64.

Run: python benchmarks/lr_free_quality.py [--quick] [--markdown]
     (needs scikit-learn; the reference columns need torch and the packages:
      pip install prodigyopt dadaptation schedulefree dog-optimizer)
"""
import argparse
import math
import time

import numpy as np

import etakit
from etakit.demo import MLP

# etakit name -> the reference package's class (module, attribute)
METHODS = {
    "Prodigy": ("prodigyopt", "Prodigy"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam"),
    "DAdaptSGD": ("dadaptation", "DAdaptSGD"),
    "DAdaptAdaGrad": ("dadaptation", "DAdaptAdaGrad"),
    "ScheduleFreeAdamW": ("schedulefree", "AdamWScheduleFree"),
    "ScheduleFreeSGD": ("schedulefree", "SGDScheduleFree"),
    "ScheduleFreeRAdam": ("schedulefree", "RAdamScheduleFree"),
    "DoG": ("dog", "DoG"),
    "LDoG": ("dog", "LDoG"),
}
GRID = np.logspace(-5, 1, 19)          # 3 per decade, for each of Adam and SGD + momentum 0.9
QUICK_GRID = np.logspace(-5, 1, 10)
SEEDS = (1, 2, 3)


class Problem:
    """``loss_grad(params, seed_rng) -> (loss, grads)`` of a minibatch (or a noisy gradient),
    ``full_loss(params)`` the training loss the methods are judged by."""

    def __init__(self, name, init, loss_grad, full_loss, steps):
        self.name, self.init, self.loss_grad, self.full_loss, self.steps = name, init, loss_grad, full_loss, steps

    def params(self):
        return [p.copy() for p in self.init]


def quadratic(L, cond, noise, dim=50, steps=300):
    """0.5 x'Ax, eigenvalues geometric from L/cond to L; gradient A x + noise N(0, noise^2)."""
    a = np.geomspace(L / cond, L, dim)
    x0 = np.random.default_rng(0).standard_normal(dim)

    def full(params):
        x = params[0]
        return 0.5 * float(x @ (a * x))

    def loss_grad(params, rng):
        x = params[0]
        g = a * x
        if noise:
            g = g + noise * rng.standard_normal(dim)
        return full(params), [g]
    return Problem(f"quadratic L={L:g} cond={cond:g} noise={noise:g}", [x0], loss_grad, full, steps)


def _minibatch(name, init, batch_loss_grad, X, y, batch, steps):
    def loss_grad(params, rng):
        idx = rng.integers(0, len(y), batch)
        return batch_loss_grad(params, X[idx], y[idx])
    return Problem(name, init, loss_grad, lambda params: batch_loss_grad(params, X, y)[0], steps)


def least_squares(steps=300):
    rng = np.random.default_rng(0)
    n, d = 2000, 50
    X = rng.standard_normal((n, d)) * np.linspace(0.3, 3.0, d)
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)

    def lg(params, Xb, yb):
        r = Xb @ params[0] - yb
        return 0.5 * float(r @ r) / len(yb), [Xb.T @ r / len(yb)]
    return _minibatch("least squares (synthetic, cond 100), batch 32", [np.zeros(d)], lg, X, y, 32, steps)


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _cancer():
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y


def network(data, name, hidden, batch, steps):
    X, y = data
    sizes = [X.shape[1]] + ([hidden] if hidden else []) + [int(y.max()) + 1]
    net = MLP(sizes, seed=0, dtype=np.float64)
    return _minibatch(f"{name}, batch {batch}", [p.copy() for p in net.params], net.loss_and_grad, X, y, batch,
                      steps)


def problems(quick=False):
    quads = [(1, 1, 0), (10, 10, 0), (100, 100, 0), (1e3, 1e3, 0), (1e4, 1e4, 0), (1, 1e4, 0),
             (1e4, 1, 0), (100, 100, 0.1), (1e3, 1e3, 1.0), (10, 10, 1.0)]
    digits, cancer = _digits(), _cancer()
    nets = [
        lambda: least_squares(),
        lambda: network(digits, "logistic regression (digits)", 0, 64, 300),
        lambda: network(cancer, "logistic regression (breast cancer)", 0, 32, 300),
        lambda: network(digits, "MLP 64-64-10 (digits)", 64, 64, 300),
        lambda: network(cancer, "MLP 30-32-2 (breast cancer)", 32, 32, 300),
    ]
    if quick:
        quads = [quads[i] for i in (0, 2, 4, 8)]
        nets = [nets[i] for i in (1, 4)]
    return [quadratic(*q) for q in quads] + [make() for make in nets]


def _judge(p, params, initial):
    with np.errstate(all="ignore"):
        final = p.full_loss(params)
    return final if math.isfinite(final) and final <= initial else math.inf


def run_etakit(p, make_opt, seed):
    """Final loss of an etakit optimizer (numpy), or inf on divergence."""
    params = p.params()
    opt = make_opt(params)
    if hasattr(opt, "train"):
        opt.train()
    rng = np.random.default_rng(seed)
    initial = p.full_loss(params)
    with np.errstate(all="ignore"):
        for _ in range(p.steps):
            loss, grads = p.loss_grad(params, rng)
            if not math.isfinite(loss):
                return math.inf
            opt.step(grads)
    if hasattr(opt, "eval"):
        opt.eval()                      # schedule-free: judge the averaged point x
    return _judge(p, params, initial)


def run_torch(p, make_opt, seed):
    """Final loss of a torch optimizer fed the same numpy gradients, or inf on divergence."""
    import torch
    tparams = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in p.params()]
    opt = make_opt(tparams)
    if hasattr(opt, "train"):
        opt.train()
    rng = np.random.default_rng(seed)
    views = [t.detach().numpy() for t in tparams]      # share memory with the tensors
    initial = p.full_loss(views)
    with np.errstate(all="ignore"):
        for _ in range(p.steps):
            loss, grads = p.loss_grad(views, rng)
            if not math.isfinite(loss):
                return math.inf
            for t, g in zip(tparams, grads):
                t.grad = torch.from_numpy(np.array(g, dtype=np.float64))
            opt.step()
    if hasattr(opt, "eval"):
        opt.eval()
    return _judge(p, [t.detach().numpy() for t in tparams], initial)


def reference_class(name):
    import importlib
    module, attr = METHODS[name]
    try:
        importlib.import_module("torch")
        return getattr(importlib.import_module(module), attr)
    except ImportError:
        return None


def _seed_mean(losses):
    """Mean over seeds; inf when any seed diverged."""
    return float(np.mean(losses)) if all(math.isfinite(v) for v in losses) else math.inf


def evaluate(p, methods, grid, seeds, with_reference=True):
    """{column: seed-averaged final loss} for the grid's best, every method and its reference."""
    initial = p.full_loss(p.params())
    best = math.inf
    best_name = None
    for base, kw in (("Adam", {}), ("SGD", {"momentum": 0.9})):
        cls = getattr(etakit, base)
        for lr in grid:
            v = _seed_mean([run_etakit(p, lambda ps: cls(ps, lr=lr, **kw), s) for s in seeds])  # noqa: B023 (called here)
            if v < best:
                best, best_name = v, f"{base}{' m=0.9' if kw else ''} lr={lr:.2g}"
    out = {}
    for name in methods:
        cls = getattr(etakit, name)
        out[name] = [run_etakit(p, cls, s) for s in seeds]
        ref = reference_class(name) if with_reference else None
        if ref is not None:
            out["ref:" + name] = [run_torch(p, ref, s) for s in seeds]
    return initial, best, best_name, out


def regret(final, initial, best):
    return (final - best) / (initial - best)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="6 problems, 3 seeds, a 10-point grid (about a tenth of the full run)")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference packages")
    ap.add_argument("--optimizers", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--per-problem", action="store_true", help="also print each problem's regrets")
    args = ap.parse_args(argv)
    grid = QUICK_GRID if args.quick else GRID
    t0 = time.perf_counter()
    cols = []
    for name in args.optimizers:
        cols.append(name)
        if not args.no_reference and reference_class(name) is not None:
            cols.append("ref:" + name)
    table = {c: {"regret": [], "div": 0, "runs": 0} for c in cols}
    per_problem = []
    suite = problems(args.quick)
    for p in suite:
        initial, best, best_name, out = evaluate(p, args.optimizers, grid, SEEDS, not args.no_reference)
        row = {}
        for c in cols:
            losses = out[c]
            t = table[c]
            t["runs"] += len(losses)
            t["div"] += sum(not math.isfinite(v) for v in losses)
            finite = [v for v in losses if math.isfinite(v)]
            if finite:
                r = regret(float(np.mean(finite)), initial, best)
                t["regret"].append(r)
                row[c] = r
            else:
                row[c] = math.nan
        per_problem.append((p.name, best_name, row))
    elapsed = time.perf_counter() - t0

    def label(c):
        if c.startswith("ref:"):
            module, attr = METHODS[c[4:]]
            return f"{module}.{attr}"
        return f"etakit.{c}"

    head = ["optimizer (defaults)", "mean regret", "max regret", "divergences (runs)"]
    lines = []
    for c in cols:
        t = table[c]
        r = np.array(t["regret"])
        lines.append([label(c), f"{r.mean():.4f}" if r.size else "-", f"{r.max():.4f}" if r.size else "-",
                      f"{t['div']} ({t['runs']})"])
    print(f"{len(suite)} problems x {len(SEEDS)} seeds; grid: constant-rate Adam and SGD momentum 0.9, "
          f"{len(grid)} learning rates each from {grid[0]:.0e} to {grid[-1]:.0e}; {elapsed:.0f} s")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        w = max(len(line[0]) for line in lines + [head])
        print(f"{head[0]:<{w}}  {head[1]:>11}  {head[2]:>10}  {head[3]:>18}")
        for line in lines:
            print(f"{line[0]:<{w}}  {line[1]:>11}  {line[2]:>10}  {line[3]:>18}")
    if args.per_problem:
        print()
        print("| problem | grid best | " + " | ".join(label(c) for c in cols) + " |")
        print("|---|---|" + "---:|" * len(cols))
        for name, best_name, row in per_problem:
            print(f"| {name} | {best_name} | " + " | ".join(
                "div" if math.isnan(row[c]) else f"{row[c]:.3f}" for c in cols) + " |")
    return table


if __name__ == "__main__":
    main()
