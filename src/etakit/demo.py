"""``etakit demo``: real training on a real dataset, start to finish.

A small multilayer perceptron, written here in numpy, learns scikit-learn's
bundled handwritten digits (``load_digits``: 1,797 8x8 images, no download).
The demo runs the LR range test, trains with AdamW and a warmup-cosine
schedule built from the suggested learning rate, reports held-out accuracy
and the time per optimizer step, and writes three pictures.

With ``--auto`` there is no learning rate to find: it trains with
``etakit.Prodigy``, the learning-rate-free optimizer this project recommends,
with no learning rate given, and plots the step size Prodigy estimated
(``step_size.png``) beside the training curves.
"""
import argparse
import os
import sys
import time

import numpy as np

import etakit
from etakit import schedules as S

__all__ = ["MLP", "load_digits_split", "run", "main"]


class MLP:
    """A multilayer perceptron with ReLU hidden layers and a softmax cross-entropy loss.

    Parameters live in ``self.params`` ([W1, b1, W2, b2, ...], float32,
    He-initialised) so any etakit optimizer can update them in place.

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP([4, 8, 3], seed=0)
    >>> X = np.ones((5, 4), np.float32); y = np.array([0, 1, 2, 0, 1])
    >>> loss, grads = net.loss_and_grad(net.params, X, y)
    >>> [g.shape for g in grads] == [p.shape for p in net.params]
    True
    """

    def __init__(self, sizes, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            self.params.append((rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(dtype))
            self.params.append(np.zeros(n_out, dtype=dtype))

    def logits(self, params, X):
        h = X
        for i in range(0, len(params) - 2, 2):
            h = np.maximum(h @ params[i] + params[i + 1], 0.0)
        return h @ params[-2] + params[-1]

    def loss_and_grad(self, params, X, y):
        """Mean cross-entropy over the batch and its gradient for every parameter."""
        acts = [X]
        h = X
        for i in range(0, len(params) - 2, 2):
            h = np.maximum(h @ params[i] + params[i + 1], 0.0)
            acts.append(h)
        z = h @ params[-2] + params[-1]
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = len(y)
        loss = -float(logp[np.arange(n), y].mean())
        d = np.exp(logp)
        d[np.arange(n), y] -= 1.0
        d /= n
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            a = acts[i // 2]
            grads[i] = np.ascontiguousarray(a.T @ d, dtype=params[i].dtype)
            grads[i + 1] = d.sum(axis=0).astype(params[i + 1].dtype)
            if i:
                d = (d @ params[i].T) * (acts[i // 2] > 0)
        return loss, grads

    def accuracy(self, X, y):
        return float((self.logits(self.params, X).argmax(axis=1) == y).mean())


def load_digits_split(seed=0, test_fraction=0.2):
    """scikit-learn's bundled digits, scaled to [0, 1], split into train and held-out sets.

    Examples
    --------
    >>> Xtr, ytr, Xte, yte = load_digits_split()       # doctest: +SKIP
    >>> Xtr.shape, Xte.shape                            # doctest: +SKIP
    ((1438, 64), (359, 64))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("etakit demo needs scikit-learn for its bundled dataset: pip install 'etakit[demo]'")
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return X[train], y[train], X[test], y[test]


def _batches(rng, n, batch):
    perm = rng.permutation(n)
    for i in range(0, n - batch + 1, batch):
        yield perm[i:i + batch]


def run(out="etakit-demo", epochs=40, batch=64, hidden=128, seed=0, quick=False, progress=True, log=print,
        auto=False, state_dtype="float32"):
    """Run the demo; return a dict of what it measured (accuracy, suggested lr, times, files).

    ``auto=True`` trains with ``etakit.Prodigy`` and no learning rate instead
    of lr_find + AdamW; ``suggested_lr`` and ``lr_find`` are then None and
    ``history["lr"]`` holds Prodigy's step size d at the end of each epoch.
    ``state_dtype`` ("float32", "bfloat16" or "int8") is AdamW's optimizer
    state during training (lr_find sweeps with float32 state either way).

    Examples
    --------
    >>> r = run(out="etakit-demo", quick=True)          # doctest: +SKIP
    >>> r["accuracy"] > 0.9                             # doctest: +SKIP
    True
    >>> run(out="etakit-demo", quick=True, auto=True)["accuracy"] > 0.9     # doctest: +SKIP
    True
    """
    if quick:
        epochs = min(epochs, 10)
    if auto and state_dtype != "float32":
        raise ValueError(f"state_dtype={state_dtype!r} applies to the AdamW path; Prodigy keeps float32 state")
    os.makedirs(out, exist_ok=True)
    Xtr, ytr, Xte, yte = load_digits_split(seed)
    net = MLP([Xtr.shape[1], hidden, 10], seed=seed)
    rng = np.random.default_rng(seed)
    log(f"etakit {etakit.__version__} demo: MLP 64-{hidden}-10 on scikit-learn's digits "
        f"({len(ytr)} train / {len(yte)} held out), {'Prodigy, no learning rate' if auto else 'AdamW'}, "
        f"{'' if state_dtype == 'float32' else state_dtype + ' optimizer state, '}"
        f"SIMD {etakit.simd_variant()}")
    steps_per_epoch = len(ytr) // batch
    total = epochs * steps_per_epoch
    if auto:
        # learning-rate-free: Prodigy estimates its own step size d as it goes
        opt = etakit.Prodigy(net.params, weight_decay=1e-4, **LOOP)
        found = lr = None
        files = ["step_size.png", "training.png"]
        title = "etakit demo: MLP on scikit-learn digits, Prodigy (no learning rate given)"
        step_size = lambda: opt.param_groups[0]["d"] * opt.current_lr()[0]     # noqa: E731
    else:
        found, lr, opt = _lr_find_path(net, Xtr, ytr, rng, batch, total, quick, progress, out, log, state_dtype)
        files = ["lr_find.png", "schedule.png", "training.png"]
        title = "etakit demo: MLP on scikit-learn digits, AdamW + warmup-cosine"
        step_size = lambda: opt.current_lr()[0]     # noqa: E731
    history, us_per_step, d_per_step = _train(net, opt, Xtr, ytr, Xte, yte, rng, batch, epochs, progress,
                                              step_size)
    acc = history["test_acc"][-1]
    ema_acc = history["ema_test_acc"][-1] if history["ema_test_acc"] else None
    log(f"held-out accuracy: {acc:.2%} after {epochs} epochs ({total} steps)"
        + (f"; with the EMA weights {ema_acc:.2%}" if ema_acc is not None else ""))
    if opt.global_clipnorm is not None:
        norms = np.array(history["grad_norm"])
        log(f"gradient norm: median {np.median(norms):.3g}, max {norms.max():.3g}; clipped to "
            f"{opt.global_clipnorm:g} in {int((norms > opt.global_clipnorm).sum())} of {len(norms)} steps")
    if auto:
        log(f"Prodigy's step size d: {d_per_step[0]:.3g} after the first step, {d_per_step[-1]:.3g} at the end")
        _plot_step_size(d_per_step, os.path.join(out, "step_size.png"))
    log(f"optimizer step: {us_per_step:.1f} us per step ({sum(p.size for p in net.params):,} parameters)")
    _plot_training(history, os.path.join(out, "training.png"), title)
    files = [os.path.join(out, f) for f in files]
    log("wrote " + ", ".join(files))
    return {"accuracy": acc, "ema_accuracy": ema_acc, "suggested_lr": lr, "lr_find": found,
            "history": history,
            "us_per_step": us_per_step, "files": files}


# The loop's other passes, fused with each step: clipping by the global gradient norm (it
# tames the large first steps of a fresh network; the norm is also what the plot shows) and an
# EMA of the weights with timm's warmup, which the held-out accuracy is also measured with.
LOOP = dict(global_clipnorm=2.0, ema_decay=0.998, ema_warmup=True)


def _lr_find_path(net, Xtr, ytr, rng, batch, total, quick, progress, out, log, state_dtype="float32"):
    """lr_find, then AdamW with a warmup-cosine schedule peaking at the suggestion."""

    def minibatch_loss_and_grad(params):
        idx = rng.integers(0, len(ytr), batch)
        return net.loss_and_grad(params, Xtr[idx], ytr[idx])

    found = etakit.lr_find(minibatch_loss_and_grad, net.params, optimizer=etakit.AdamW, start_lr=1e-5,
                           end_lr=10.0, num_steps=60 if quick else 100, progress=progress, weight_decay=1e-4)
    lr = found.suggestion
    log(f"lr_find: suggested learning rate {lr:.3g} ({found.stop_reason} after {len(found.lrs)} steps, "
        f"+ {found.extra_steps} confirming it; "
        + ", ".join(f"{k} {v:.3g}" for k, v in found.suggestions.items()) + ")")
    found.plot(path=os.path.join(out, "lr_find.png"))
    schedule = S.warmup_cosine(lr, warmup_steps=max(1, total // 20), total_steps=total, min_lr=lr / 100)
    ax = schedule.plot(total)
    ax.set_title(f"AdamW learning rate: warmup-cosine from the suggested {lr:.3g}")
    ax.legend(fontsize="small")
    ax.figure.savefig(os.path.join(out, "schedule.png"), dpi=120)
    return found, lr, etakit.AdamW(net.params, lr=schedule, weight_decay=1e-4, state_dtype=state_dtype, **LOOP)


def _train(net, opt, Xtr, ytr, Xte, yte, rng, batch, epochs, progress, step_size):
    """The training loop: (history per epoch, us per optimizer step, step_size() after every step)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    history = {"epoch": [], "train_loss": [], "train_acc": [], "test_acc": [], "ema_test_acc": [], "lr": [],
               "grad_norm": [], "clip": opt.global_clipnorm}
    step_time = 0.0
    sizes = []
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not (progress and sys.stderr.isatty())) \
        if tqdm is not None else range(epochs)
    for epoch in bar:
        losses = []
        for idx in _batches(rng, len(ytr), batch):
            loss, grads = net.loss_and_grad(net.params, Xtr[idx], ytr[idx])
            t0 = time.perf_counter()
            opt.step(grads)
            step_time += time.perf_counter() - t0
            losses.append(loss)
            sizes.append(step_size())
            history["grad_norm"].append(opt.last_grad_norm)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(float(np.mean(losses)))
        history["train_acc"].append(net.accuracy(Xtr, ytr))
        history["test_acc"].append(net.accuracy(Xte, yte))
        if opt.ema is not None:
            with opt.ema_weights():
                history["ema_test_acc"].append(net.accuracy(Xte, yte))
        history["lr"].append(sizes[-1])
        if tqdm is not None:
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", acc=f"{history['train_acc'][-1]:.3f}",
                            lr=f"{history['lr'][-1]:.2e}")
    return history, step_time / len(sizes) * 1e6, sizes


def _plot_step_size(sizes, path):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(1, len(sizes) + 1), sizes, color="C2")
    ax.set_xlabel("step")
    ax.set_ylabel("step size d (lr multiplier 1)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title("Prodigy's own estimate of the step size")
    fig.savefig(path, dpi=120)


def _plot_training(h, path, title):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    a.plot(h["epoch"], h["train_loss"], "o-", ms=3, color="C0")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss (cross-entropy)")
    a.set_yscale("log")
    a.grid(True, alpha=0.3)
    b.plot(h["epoch"], h["train_acc"], "o-", ms=3, label="training")
    b.plot(h["epoch"], h["test_acc"], "s-", ms=3, label="held out")
    if h["ema_test_acc"]:
        b.plot(h["epoch"], h["ema_test_acc"], "^-", ms=3, label="held out, EMA weights")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.set_ylim(min(0.8, min(h["test_acc"] + h["ema_test_acc"])), 1.005)
    b.grid(True, alpha=0.3)
    b.legend()
    steps = np.arange(1, len(h["grad_norm"]) + 1)
    c.plot(steps, h["grad_norm"], lw=0.8, color="C3", label="global gradient norm")
    if h["clip"] is not None:
        c.axhline(h["clip"], color="k", ls="--", lw=1, label=f"clipped to {h['clip']:g}")
    c.set_xlabel("step")
    c.set_ylabel("gradient norm (before clipping)")
    c.set_yscale("log")
    c.grid(True, alpha=0.3)
    c.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=120)


def main(argv=None):
    """``etakit demo`` on the command line.

    Examples
    --------
    >>> main(["--quick", "--out", "/tmp/etakit-demo"])   # doctest: +SKIP
    0
    """
    ap = argparse.ArgumentParser(prog="etakit demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="etakit-demo", help="folder for the pictures (default ./etakit-demo)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smaller run (10 epochs), as the tests use")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--auto", action="store_true",
                    help="no learning rate to find: train with etakit.Prodigy, learning-rate-free")
    ap.add_argument("--state-dtype", choices=["float32", "bfloat16", "int8"], default="float32",
                    help="AdamW's optimizer state while training (default float32)")
    args = ap.parse_args(argv)
    if args.auto and args.state_dtype != "float32":
        ap.error("--state-dtype applies to the AdamW path, not to --auto (Prodigy keeps float32 state)")
    t0 = time.perf_counter()
    r = run(out=args.out, epochs=args.epochs, seed=args.seed, quick=args.quick, progress=not args.no_progress,
            auto=args.auto, state_dtype=args.state_dtype)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0 if r["accuracy"] > 0 else 1
