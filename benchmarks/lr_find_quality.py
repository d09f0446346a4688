"""How good are lr_find's suggestions?  A sceptic's check against a grid search.

For each problem and seed: run ``etakit.lr_find`` as a user would (defaults:
1e-7 .. 10 over 100 steps, plus its confirmation runs), then train from the
same start, for the problem's budget, with each suggested learning rate and
with every rate of a log grid (8 per decade, 1e-5 .. 10), both at a constant
rate and as the peak of a warmup-cosine schedule (5% warmup, cosine to 0).
The score is the *normalised regret* of the final full-data loss,

    (loss(pick) - loss(best of grid)) / (loss(initial) - loss(best of grid)),

0 for the grid's best, 1 for no better than not training.  A run *diverges*
when its final loss is not finite or above the initial loss; it is counted in
its own column and scores 1.  Regret is averaged over seeds (the seed sets the
initial point, lr_find's minibatches and training's minibatches; the grid and
the picks train on the same minibatches).  Grid runs above three divergent
grid rates in a row are not run (counted as divergent).

The rules: ``default`` (lr_find's suggestion), and the classic rules read off
the same sweep as fastai reads them (its bias-corrected moving average of the
loss): ``valley``, ``steepest`` (steepest descent point), ``minimum/10``.

The summary gives, per rule and schedule (and both together), the mean and
the max over problems of the seed-averaged regret, and the divergences out
of all runs.

Run: python benchmarks/lr_find_quality.py [--markdown] [--seeds 3] [--quick] [--jobs 2]
(needs scikit-learn; about 5 minutes on 2 cores, under 2 with --quick)
"""
import argparse
import json
import math
import os
import time

import numpy as np

import etakit
from etakit.demo import MLP

GRID = 10.0 ** (np.arange(-40, 9) / 8.0)        # 1e-5 .. 10, 8 per decade
SCHEDULES = ("constant", "warmup-cosine")
RULES = ("default", "valley", "steepest", "minimum")
RULE_NAMES = {"default": "default", "valley": "valley", "steepest": "steepest", "minimum": "minimum/10"}


class Problem:
    """A training problem: initial parameters, a minibatch loss_and_grad, the full loss."""

    def __init__(self, name, optimizer, kwargs, steps):
        self.name, self.optimizer, self.kwargs, self.steps = name, optimizer, dict(kwargs), steps

    def init(self, seed):
        raise NotImplementedError

    def sampler(self, seed):
        raise NotImplementedError

    def full_loss(self, params):
        raise NotImplementedError

    def train(self, lr, schedule, seed):
        """Final full loss after ``steps`` steps at ``lr`` (constant, or the peak of warmup-cosine); inf if not
        finite."""
        params = self.init(seed)
        if schedule == "constant":
            sched = lr
        else:
            sched = etakit.schedules.warmup_cosine(lr, max(1, self.steps // 20), self.steps)
        opt = self.optimizer(params, lr=sched, **self.kwargs)
        f = self.sampler(seed)
        with np.errstate(all="ignore"):
            for _ in range(self.steps):
                loss, grads = f(params)
                if not math.isfinite(loss):
                    return math.inf
                opt.step(grads)
            final = self.full_loss(params)
        return final if math.isfinite(final) else math.inf


class Quadratic(Problem):
    """0.5 (x - x*)^T A (x - x*) + shift, A = Q diag(eig) Q^T with a fixed random rotation Q;
    the gradient gets N(0, noise^2) noise per coordinate (the loss lr_find sees stays exact)."""

    def __init__(self, name, eig, optimizer, kwargs, noise=0.0, steps=300, shift=0.0):
        super().__init__(name, optimizer, kwargs, steps)
        self.eig = np.asarray(eig, dtype=np.float64)
        d = len(self.eig)
        q, _ = np.linalg.qr(np.random.default_rng(12345).standard_normal((d, d)))
        self.A = (q * self.eig) @ q.T
        self.noise, self.shift = noise, shift

    def init(self, seed):
        return [np.random.default_rng(seed).standard_normal(len(self.eig))]

    def full_loss(self, params):
        x = params[0]
        return 0.5 * float(x @ (self.A @ x)) + self.shift

    def sampler(self, seed):
        rng = np.random.default_rng(seed + 1000)
        A, noise, d, shift = self.A, self.noise, len(self.eig), self.shift

        def loss_and_grad(params):
            x = params[0]
            g = A @ x
            if noise:
                g = g + noise * rng.standard_normal(d)
            return 0.5 * float(x @ (A @ x)) + shift, [g]
        return loss_and_grad


class Supervised(Problem):
    """A model with loss_grad(params, X, y) on minibatches of a dataset."""

    def __init__(self, name, make, loss_grad, X, y, optimizer, kwargs, steps, batch):
        super().__init__(name, optimizer, kwargs, steps)
        self.make, self.loss_grad, self.X, self.y, self.batch = make, loss_grad, X, y, batch

    def init(self, seed):
        return self.make(seed)

    def full_loss(self, params):
        return self.loss_grad(params, self.X, self.y)[0]

    def sampler(self, seed):
        rng = np.random.default_rng(seed + 1000)
        X, y, batch, loss_grad = self.X, self.y, self.batch, self.loss_grad

        def loss_and_grad(params):
            idx = rng.integers(0, len(y), batch)
            return loss_grad(params, X[idx], y[idx])
        return loss_and_grad


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _cancer():
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), y


def _linreg_data():
    rng = np.random.default_rng(0)
    n, d = 2000, 50
    X = rng.standard_normal((n, d)) * np.linspace(0.3, 3.0, d)
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    return X, y


def _linreg_loss(params, X, y):
    r = X @ params[0] - y
    return 0.5 * float(r @ r) / len(y), [X.T @ r / len(y)]


def network(X, y, name, optimizer, kwargs, steps, hidden=None, batch=64):
    sizes = [X.shape[1]] + ([hidden] if hidden else []) + [int(y.max()) + 1]
    net = MLP(sizes, seed=0)
    return Supervised(name, lambda seed: [p.copy() for p in MLP(sizes, seed=seed).params], net.loss_and_grad,
                      X, y, optimizer, kwargs, steps, batch)


def geometric(L, cond, d=50):
    return np.geomspace(L / cond, L, d)


def problems():
    Xd, yd = _digits()
    Xc, yc = _cancer()
    Xl, yl = _linreg_data()
    SGD, mom = etakit.SGD, dict(momentum=0.9)
    return [
        Quadratic("quadratic L=10 cond=10, SGD", geometric(10, 10), SGD, {}),
        Quadratic("quadratic L=100 cond=100, SGD, noise 0.1", geometric(100, 100), SGD, {}, noise=0.1),
        Quadratic("quadratic L=1e3 cond=1e3, SGD", geometric(1e3, 1e3), SGD, {}),
        Quadratic("quadratic L=1e4 cond=1e4, SGD, noise 1", geometric(1e4, 1e4), SGD, {}, noise=1.0),
        Quadratic("quadratic eig linspace(1,100,100), SGD", np.linspace(1, 100, 100), SGD, {}),
        Quadratic("quadratic L=1 cond=1, SGD, noise 0.3", np.ones(50), SGD, {}, noise=0.3),
        Quadratic("quadratic L=100 cond=100, SGD momentum 0.9", geometric(100, 100), SGD, mom),
        Quadratic("quadratic L=1e4 cond=100, SGD momentum 0.9, noise 1", geometric(1e4, 100), SGD, mom, noise=1.0),
        Quadratic("quadratic L=100 cond=100, Adam, noise 1", geometric(100, 100), etakit.Adam, {}, noise=1.0),
        Quadratic("quadratic L=1e4 cond=1e4, Adam", geometric(1e4, 1e4), etakit.Adam, {}),
        Quadratic("quadratic L=1e3 cond=1e3, RMSprop", geometric(1e3, 1e3), etakit.RMSprop, {}),
        Quadratic("quadratic L=10 cond=1e3, Adagrad, noise 0.1, loss - 100", geometric(10, 1e3), etakit.Adagrad, {},
                  noise=0.1, shift=-100.0),
        Supervised("linear regression (synthetic), SGD", lambda seed: [np.zeros(Xl.shape[1])], _linreg_loss,
                   Xl, yl, SGD, {}, 300, 32),
        network(Xd, yd, "softmax regression (digits), SGD momentum 0.9", SGD, mom, 400),
        network(Xd, yd, "softmax regression (digits), Adagrad", etakit.Adagrad, {}, 400),
        network(Xd, yd, "MLP 64-128-10 (digits), Adam", etakit.Adam, {}, 400, hidden=128),
        network(Xd, yd, "MLP 64-128-10 (digits), SGD momentum 0.9", SGD, mom, 400, hidden=128),
        network(Xd, yd, "MLP 64-128-10 (digits), RMSprop", etakit.RMSprop, {}, 400, hidden=128),
        network(Xc, yc, "logistic regression (breast cancer), Adam", etakit.Adam, {}, 300, batch=32),
        network(Xc, yc, "MLP 30-64-2 (breast cancer), AdamW", etakit.AdamW, {}, 300, hidden=64, batch=32),
    ]


# ---- one problem, one seed ----------------------------------------------------------

def grid_losses(p, seed, schedule, cache):
    """Final loss at every grid rate; rates above three divergent ones in a row are not run (inf)."""
    key = f"{p.name}|{seed}|{schedule}|{p.steps}"
    if cache is not None and key in cache:
        return np.array(cache[key])
    initial = p.full_loss(p.init(seed))
    out, bad = [], 0
    for lr in GRID:
        loss = math.inf if bad >= 3 else p.train(lr, schedule, seed)
        bad = bad + 1 if not loss <= initial else 0
        out.append(loss)
    if cache is not None:
        cache[key] = out
    return np.array(out)


def picks(p, seed, lr_find_kwargs):
    """lr_find's suggestions for this seed: {rule: lr}, and what it cost."""
    res = etakit.lr_find(p.sampler(seed + 500), p.init(seed), optimizer=p.optimizer, progress=False,
                         **p.kwargs, **lr_find_kwargs)
    lrs = {"default": res.suggestion, "valley": res.suggestions["valley"],
           "steepest": res.suggestions["steepest"], "minimum": res.suggestions["minimum"]}
    return lrs, {"sweep": len(res.lrs), "extra": getattr(res, "extra_steps", 0), "stop": res.stop_reason}


def run_one(args):
    """Everything for one (problem, seed): grid, picks, regrets."""
    i, seed, cache_items, lr_find_kwargs = args
    etakit.set_num_threads(1)
    import warnings
    warnings.simplefilter("ignore")          # lr_find's warnings on hard cases are part of what is measured
    p = problems()[i]
    cache = dict(cache_items)
    t0 = time.perf_counter()
    initial = p.full_loss(p.init(seed))
    lrs, cost = picks(p, seed, lr_find_kwargs)
    out = {"problem": i, "seed": seed, "initial": initial, "lrs": lrs, "cost": cost, "runs": {}}
    for sched in SCHEDULES:
        grid = grid_losses(p, seed, sched, cache)
        j = int(np.argmin(grid))
        best = float(grid[j])
        row = {"best_lr": float(GRID[j]), "best": best}
        for rule, lr in lrs.items():
            loss = p.train(lr, sched, seed) if math.isfinite(lr) and lr > 0 else math.inf
            diverged = not loss <= initial
            regret = 1.0 if diverged else (loss - best) / (initial - best)
            row[rule] = {"lr": lr, "loss": loss, "regret": regret, "diverged": diverged}
        out["runs"][sched] = row
    out["seconds"] = time.perf_counter() - t0
    return out, {k: v for k, v in cache.items() if k.startswith(p.name + "|")}


# ---- the report ---------------------------------------------------------------------

def summarise(results, n_problems):
    per = {}
    for r in results:
        per.setdefault(r["problem"], []).append(r)
    rows = []
    allreg = {(rule, sched): [] for rule in RULES for sched in SCHEDULES}
    divs = {(rule, sched): 0 for rule in RULES for sched in SCHEDULES}
    for i in range(n_problems):
        rs = per.get(i, [])
        if not rs:
            continue
        row = {"problem": i, "n": len(rs)}
        for sched in SCHEDULES:
            row[sched] = {"best_lr": float(np.exp(np.mean([np.log(r["runs"][sched]["best_lr"]) for r in rs])))}
            for rule in RULES:
                reg = [r["runs"][sched][rule]["regret"] for r in rs]
                d = sum(r["runs"][sched][rule]["diverged"] for r in rs)
                row[sched][rule] = (float(np.mean(reg)), d)
                allreg[rule, sched].append(float(np.mean(reg)))
                divs[rule, sched] += d
        row["lr"] = {rule: float(np.exp(np.mean([np.log(r["lrs"][rule]) for r in rs
                                                 if r["lrs"][rule] > 0 and math.isfinite(r["lrs"][rule])] or [np.nan])))
                     for rule in RULES}
        row["extra"] = float(np.mean([r["cost"]["extra"] for r in rs]))
        row["sweep"] = float(np.mean([r["cost"]["sweep"] for r in rs]))
        rows.append(row)
    runs = sum(row["n"] for row in rows)
    summary = {}
    for rule in RULES:
        for sched in SCHEDULES:
            summary[rule, sched] = {"mean": float(np.mean(allreg[rule, sched])),
                                    "max": float(np.max(allreg[rule, sched])),
                                    "divergences": divs[rule, sched], "runs": runs}
        both = allreg[rule, SCHEDULES[0]] + allreg[rule, SCHEDULES[1]]
        summary[rule, "both"] = {"mean": float(np.mean(both)), "max": float(np.max(both)),
                                 "divergences": sum(divs[rule, sc] for sc in SCHEDULES), "runs": 2 * runs}
    return rows, summary


def report(rows, summary, names, markdown=True):
    lines = []
    head = (["problem", "grid best lr (const / wc)", "default lr", "default regret (const / wc)", "default div"]
            + [f"{RULE_NAMES[r]} regret (const / wc)" for r in RULES[1:]] + [f"{RULE_NAMES[r]} div" for r in RULES[1:]])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        c, w = row["constant"], row["warmup-cosine"]
        cells = [names[row["problem"]], f"{c['best_lr']:.2g} / {w['best_lr']:.2g}", f"{row['lr']['default']:.2g}",
                 f"{c['default'][0]:.3f} / {w['default'][0]:.3f}", f"{c['default'][1] + w['default'][1]}"]
        cells += [f"{c[r][0]:.3f} / {w[r][0]:.3f}" for r in RULES[1:]]
        cells += [f"{c[r][1] + w[r][1]}" for r in RULES[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| rule | schedule | mean regret | max regret | divergences |")
    lines.append("|---|---|---|---|---|")
    for r in RULES:
        for sched in (*SCHEDULES, "both"):
            s = summary[r, sched]
            lines.append(f"| {RULE_NAMES[r]} | {sched} | {s['mean']:.4f} | {s['max']:.3f} | "
                         f"{s['divergences']} of {s['runs']} |")
    return "\n".join(lines) if markdown else "\n".join(lines).replace("|", " ")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables only")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per problem (default 3)")
    ap.add_argument("--quick", action="store_true", help="one seed per problem (about a third of the time)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--problems", default="", help="only problems whose name contains this text")
    ap.add_argument("--cache", default=None, help="JSON file keeping the grid's losses between runs")
    ap.add_argument("--json", default=None, help="write every result to this JSON file")
    ap.add_argument("--lr-find-kwargs", default="{}", help="extra keyword arguments of lr_find, as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = 1
    t0 = time.perf_counter()
    ps = problems()
    names = [p.name for p in ps]
    chosen = [i for i, p in enumerate(ps) if args.problems in p.name]
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as fh:
            cache = json.load(fh)
    tasks = []
    for i in chosen:
        mine = [(k, v) for k, v in cache.items() if k.startswith(names[i] + "|")]
        tasks += [(i, seed, mine, json.loads(args.lr_find_kwargs)) for seed in range(args.seeds)]
    # the slow problems first, so the two workers finish together
    tasks.sort(key=lambda t: -ps[t[0]].steps * (10 if isinstance(ps[t[0]], Supervised) else 1))
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=args.jobs) as ex:
            outs = list(ex.map(run_one, tasks))
    else:
        outs = [run_one(t) for t in tasks]
    results = [o[0] for o in outs]
    for o in outs:
        cache.update(o[1])
    if args.cache:
        with open(args.cache, "w") as fh:
            json.dump(cache, fh)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, default=float)
    rows, summary = summarise(results, len(ps))
    if not args.markdown:
        print(__doc__.split("\n\n")[0])
    print(report(rows, summary, names))
    cost = [r["cost"] for r in results]
    print(f"\nlr_find cost: {np.mean([c['sweep'] for c in cost]):.0f} sweep steps and "
          f"{np.mean([c['extra'] for c in cost]):.0f} confirmation steps on average "
          f"(at most {max(c['sweep'] + c['extra'] for c in cost)}); {len(results)} problem-seeds, "
          f"{time.perf_counter() - t0:.0f} s; etakit from {os.path.dirname(etakit.__file__)}")


if __name__ == "__main__":
    main()
