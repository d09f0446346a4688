"""How good are lr_find's suggestions?  A sceptic's check against a grid search.

For each problem: run lr_find, then train from the same start, for the same
budget, with each suggested learning rate and with every learning rate of a
41-point log grid (1e-4 .. 10), each used as the peak of a warmup-cosine
schedule (as the demo uses it).  The final loss is the full-data training
loss averaged over 3 minibatch orders.  Print each, and how far each
suggestion is from the grid's best.

Run: python benchmarks/lr_find_quality.py [--markdown]   (needs scikit-learn)
"""
import argparse
import math

import numpy as np

import etakit
from etakit.demo import MLP


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _cancer():
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), y


class Problem:
    def __init__(self, name, make_params, loss_grad, X, y, optimizer, kwargs, steps, batch):
        self.name, self.make_params, self.loss_grad = name, make_params, loss_grad
        self.X, self.y, self.optimizer, self.kwargs, self.steps, self.batch = X, y, optimizer, kwargs, steps, batch

    def sampler(self, seed):
        rng = np.random.default_rng(seed)
        return lambda params: self.loss_grad(params, *self._batch(rng))

    def _batch(self, rng):
        idx = rng.integers(0, len(self.y), self.batch)
        return self.X[idx], self.y[idx]

    def full_loss(self, params):
        return self.loss_grad(params, self.X, self.y)[0]

    def train(self, lr, seed=1):
        """Train for the budget with ``lr`` as the peak of a warmup-cosine schedule
        (the way a range test's suggestion is used, as in the demo)."""
        params = self.make_params()
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


def linreg_problem():
    rng = np.random.default_rng(0)
    n, d = 2000, 50
    X = (rng.standard_normal((n, d)) * np.linspace(0.3, 3.0, d)).astype(np.float64)
    w = rng.standard_normal(d)
    y = X @ w + 0.5 * rng.standard_normal(n)

    def loss_grad(params, Xb, yb):
        r = Xb @ params[0] - yb
        return 0.5 * float(r @ r) / len(yb), [Xb.T @ r / len(yb)]
    return Problem("linear regression (synthetic), SGD", lambda: [np.zeros(d)], loss_grad, X, y,
                   etakit.SGD, {}, 300, 32)


def softmax_problem(X, y, name, optimizer, kwargs, steps, batch=64):
    k = int(y.max()) + 1
    net = MLP([X.shape[1], k], seed=0)
    return Problem(name, lambda: [p.copy() for p in MLP([X.shape[1], k], seed=0).params],
                   net.loss_and_grad, X, y, optimizer, kwargs, steps, batch)


def mlp_problem(X, y, name, optimizer, kwargs, steps, hidden=128, batch=64):
    k = int(y.max()) + 1
    net = MLP([X.shape[1], hidden, k], seed=0)
    return Problem(name, lambda: [p.copy() for p in MLP([X.shape[1], hidden, k], seed=0).params],
                   net.loss_and_grad, X, y, optimizer, kwargs, steps, batch)


def problems():
    Xd, yd = _digits()
    Xc, yc = _cancer()
    return [
        linreg_problem(),
        softmax_problem(Xd, yd, "softmax regression (digits), SGD momentum 0.9", etakit.SGD, dict(momentum=0.9), 400),
        mlp_problem(Xd, yd, "MLP 64-128-10 (digits), Adam", etakit.Adam, {}, 400),
        mlp_problem(Xd, yd, "MLP 64-128-10 (digits), SGD momentum 0.9", etakit.SGD, dict(momentum=0.9), 400),
        softmax_problem(Xc, yc, "logistic regression (breast cancer), Adam", etakit.Adam, {}, 300, batch=32),
        mlp_problem(Xc, yc, "MLP 30-64-2 (breast cancer), AdamW", etakit.AdamW, {}, 300, hidden=64, batch=32),
    ]


GRID = np.logspace(-4, 1, 41)
SEEDS = (1, 2, 3)


def final_loss(p, lr):
    return float(np.mean([p.train(lr, seed) for seed in SEEDS]))


def evaluate(p):
    res = etakit.lr_find(p.sampler(0), p.make_params(), optimizer=p.optimizer, start_lr=1e-6, end_lr=10.0,
                         num_steps=100, progress=False, **p.kwargs)
    grid = [(lr, final_loss(p, lr)) for lr in GRID]
    best_lr, best = min(grid, key=lambda t: t[1])
    rows = {name: (lr, final_loss(p, lr)) for name, lr in res.suggestions.items()}
    return res, best_lr, best, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    names = ["robust", "valley", "steepest", "minimum"]
    lines = []
    worst = {n: 0.0 for n in names}
    for p in problems():
        res, best_lr, best, rows = evaluate(p)
        cells = []
        for n in names:
            lr, loss = rows[n]
            gap = (loss - best) / abs(best) * 100 if math.isfinite(loss) else math.inf
            worst[n] = max(worst[n], gap)
            cells.append(f"{lr:.2g}: {loss:.4g} ({'+' if gap >= 0 else ''}{gap:.1f}%)")
        lines.append([p.name, f"{p.steps}", f"{best_lr:.2g}: {best:.4g}"] + cells)
    head = ["problem", "steps", "grid best lr: loss"] + [f"{n}{' (default)' if n == 'robust' else ''}" for n in names]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        print("| worst gap | | | " + " | ".join(f"{worst[n]:+.1f}%" for n in names) + " |")
    else:
        for line in lines:
            print(line[0])
            for h, c in zip(head[1:], line[1:]):
                print(f"   {h:<20} {c}")
        print("worst gap to the grid's best: " + ", ".join(f"{n} {worst[n]:+.1f}%" for n in names))


if __name__ == "__main__":
    main()
