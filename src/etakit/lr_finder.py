"""The learning-rate range test: sweep the learning rate upward, watch the loss.

``lr_find`` runs a short training with a learning rate that grows each step
(exponentially or linearly) from ``start_lr`` to ``end_lr``, records the loss
before each step, stops once the loss has clearly diverged, restores the
parameters, and suggests learning rates read off the loss curve.  It works
on plain numpy with any etakit optimizer; the sweep itself is an etakit
schedule, so the optimizer steps in C as usual.
"""
import math
import numbers
import sys

import numpy as np

from . import schedules as S
from .optim import AdamW, Optimizer

__all__ = ["lr_find", "LRFindResult"]

_MEDIAN_WINDOW = 5


def _valley(smoothed):
    """fastai's valley: the middle-to-late part of the longest decreasing stretch."""
    n = len(smoothed)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max(0, max_start + int(sections) + int(sections / 2))


def _window_slope(x, y, half):
    """Least-squares slope of y against x over a centred window of 2*half + 1 points."""
    n = len(y)
    out = np.full(n, np.nan)
    for i in range(n):
        a, b = max(0, i - half), min(n, i + half + 1)
        if b - a >= 3:
            xs, ys = x[a:b] - x[a:b].mean(), y[a:b] - y[a:b].mean()
            out[i] = float(xs @ ys) / float(xs @ xs)
    return out


def _blowup(losses, diverge):
    """Index where the raw loss (median of 5) first exceeds ``diverge`` x its best so far, or None."""
    best = math.inf
    for t in range(len(losses)):
        m = float(np.median(losses[max(0, t - _MEDIAN_WINDOW + 1):t + 1]))
        if t and m > best + (diverge - 1.0) * abs(best):
            return t
        best = min(best, m)
    return None


def _suggest(lrs, smoothed, losses, diverge):
    """Every suggestion, from the finite part of the sweep."""
    n = len(smoothed)
    if n < 5:
        lr = float(lrs[0]) if n else float("nan")
        return {"robust": lr, "valley": lr, "steepest": lr, "minimum": lr / 10}
    x = np.log(lrs[:n])
    skip = max(1, n // 10)   # the first averages rest on a few losses only
    i_min = skip + int(np.argmin(smoothed[skip:]))
    steep = np.gradient(smoothed, x)
    i_steep = skip + int(np.argmin(steep[skip:i_min + 1])) if i_min > skip else i_min
    # robust: fastest relative decrease, measured over a window of 10% of the sweep
    rel = _window_slope(x, np.log(np.maximum(smoothed, 1e-300)), max(2, n // 20))
    i_robust = skip + int(np.nanargmin(rel[skip:i_min + 1])) if i_min > skip else i_min
    robust = float(lrs[i_robust])
    # the average lags the loss by tens of steps; the raw loss shows a blow-up
    # at once, a few steps past the edge of stability: stay well below it
    i_up = _blowup(losses, diverge)
    if i_up is not None:
        robust = min(robust, float(lrs[i_up]) / 4.0)
    return {"robust": robust, "valley": float(lrs[min(_valley(list(smoothed)), n - 1)]),
            "steepest": float(lrs[i_steep]), "minimum": float(lrs[i_min]) / 10.0}


class LRFindResult:
    """The outcome of :func:`lr_find`.

    Attributes
    ----------
    lrs, losses, smoothed_losses : ndarray
        The sweep's learning rate (of the first group), the loss recorded
        before the step with that learning rate, and its smoothed value.
    suggestion : float
        The default suggestion (``suggestions["robust"]``), for the first group.
    suggestions : dict
        ``"robust"`` (the default), ``"valley"``, ``"steepest"`` and
        ``"minimum"`` (the minimum's learning rate / 10).
    group_suggestions : list of float
        ``suggestion`` times each group's learning-rate multiplier.
    stop_reason : str
        ``"completed"``, ``"diverged"`` (smoothed loss above ``diverge`` x the
        best) or ``"non-finite"`` (a NaN or infinite loss).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> res = etakit.lr_find(lambda ps: (float(ps[0] @ ps[0]), [2 * ps[0]]), [np.ones(3)],
    ...                      optimizer=etakit.SGD, start_lr=1e-4, end_lr=10, progress=False)
    >>> sorted(res.suggestions), res.stop_reason
    (['minimum', 'robust', 'steepest', 'valley'], 'diverged')
    """

    def __init__(self, lrs, losses, smoothed_losses, group_scales, stop_reason, settings):
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.smoothed_losses = np.asarray(smoothed_losses, dtype=np.float64)
        self.group_scales = list(group_scales)
        self.stop_reason = stop_reason
        self.settings = dict(settings)
        finite = np.isfinite(self.smoothed_losses)
        n = int(np.argmin(finite)) if not finite.all() else len(finite)
        self.suggestions = _suggest(self.lrs[:n], self.smoothed_losses[:n], self.losses[:n],
                                    self.settings.get("diverge", 4.0))
        self.suggestion = self.suggestions["robust"]
        self.group_suggestions = [self.suggestion * s for s in self.group_scales]

    def __repr__(self):
        return (f"LRFindResult(suggestion={self.suggestion:.3g}, steps={len(self.lrs)}, "
                f"stop_reason={self.stop_reason!r}, suggestions={{"
                + ", ".join(f"{k!r}: {v:.3g}" for k, v in self.suggestions.items()) + "})")

    def to_dict(self):
        """Plain data: lists, floats and strings.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> res = etakit.lr_find(lambda ps: (float(ps[0] @ ps[0]), [2 * ps[0]]), [np.ones(3)],
        ...                      optimizer=etakit.SGD, num_steps=10, progress=False)
        >>> len(res.to_dict()["lrs"])
        10
        """
        return {"lrs": self.lrs.tolist(), "losses": self.losses.tolist(),
                "smoothed_losses": self.smoothed_losses.tolist(), "suggestion": self.suggestion,
                "suggestions": dict(self.suggestions), "group_suggestions": list(self.group_suggestions),
                "group_scales": list(self.group_scales), "stop_reason": self.stop_reason,
                "settings": dict(self.settings)}

    def plot(self, path=None, ax=None):
        """Loss against learning rate (log scale), with the suggestions marked.

        Needs matplotlib.  Returns the axes; writes ``path`` when given.

        Examples
        --------
        >>> res.plot(path="lr_find.png")          # doctest: +SKIP
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install 'etakit[plot]'") from None
        if ax is None:
            fig = Figure(figsize=(7, 4.2), layout="constrained")
            ax = fig.subplots()
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed_losses, color="C0", lw=2, label="smoothed loss")
        limits = _loss_axis_limits(self.losses, self.smoothed_losses)
        if limits is not None:
            lo, hi = limits
            ax.set_ylim(lo, hi)
            above = np.isfinite(self.losses) & (self.losses > hi)
            if above.any():   # the divergence spike: marked on the top edge rather than scaled into view
                ax.plot(self.lrs[above], np.full(int(above.sum()), hi), ls="none", marker="^", ms=4, color="0.45",
                        clip_on=False, label=f"loss above the axis ({int(above.sum())} steps)")
        styles = {"robust": ("C3", "-"), "valley": ("C2", "--"), "steepest": ("C1", ":"), "minimum": ("C4", "-.")}
        for name, lr in self.suggestions.items():
            color, ls = styles[name]
            lw = 2.2 if name == "robust" else 1.2
            text = f"{name}{' (suggestion)' if name == 'robust' else ''}: {lr:.2g}"
            ax.axvline(lr, color=color, ls=ls, lw=lw, label=text)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss")
        ax.set_title(f"LR range test ({len(self.lrs)} steps, {self.stop_reason})")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize="small")
        if path is not None:
            ax.figure.savefig(path, dpi=120)
        return ax


def _loss_axis_limits(losses, smoothed):
    """The loss axis of the plot: every raw loss that matters, not the final blow-up.

    From the lowest raw (or smoothed) loss up to the starting level (the
    highest raw loss of the first 10% of the sweep, or the 80th percentile of
    all raw losses if higher), plus a quarter of that range so the rise into
    divergence shows.  The raw losses beyond (the divergence spike) would
    otherwise flatten the interesting part.  None when no loss is finite.
    """
    raw = np.asarray(losses, dtype=np.float64)
    raw = raw[np.isfinite(raw)]
    sm = np.asarray(smoothed, dtype=np.float64)
    sm = sm[np.isfinite(sm)]
    if not len(raw) and not len(sm):
        return None
    both = np.concatenate([raw, sm])
    lo = float(both.min())
    ref = raw if len(raw) else sm
    top = max(float(ref[: max(1, len(ref) // 10)].max()), float(np.quantile(ref, 0.8)))
    top = max(top, lo)
    span = top - lo
    if span <= 0:
        span = max(abs(lo) * 0.1, 1e-12)
    return lo - 0.05 * span, top + 0.25 * span


def _check_positive(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def lr_find(loss_and_grad, params, optimizer=AdamW, start_lr=1e-7, end_lr=10.0, num_steps=100, mode="exp",
            smooth=0.98, diverge=4.0, restore=True, progress=True, **optimizer_kwargs):
    """LR range test: train briefly with a growing learning rate and suggest one.

    Parameters
    ----------
    loss_and_grad : callable
        ``loss_and_grad(arrays) -> (loss, grads)``, called once per step with
        the flat list of parameter arrays (group order); it draws its own
        minibatch and returns a scalar loss and one gradient per array.
    params : list of ndarray or list of dict
        As for any etakit optimizer.  A group's ``"lr"`` is read as a
        multiplier of the sweep's learning rate, so groups keep their ratios.
    optimizer : etakit optimizer class, or callable ``f(params, lr) -> optimizer``
    start_lr, end_lr : float
        The sweep's range, ``0 < start_lr < end_lr``.
    num_steps : int
        Number of steps of the full sweep (>= 5).
    mode : {"exp", "linear"}
        Exponential (the default: even in log scale) or linear growth.
    smooth : float
        Weight of the exponential moving average of the loss, in [0, 1).
    diverge : float
        Stop once the smoothed loss exceeds ``diverge`` times its best (> 1;
        for a loss that can be negative: the best plus ``diverge - 1`` times
        its magnitude).
    restore : bool
        Put the parameters back exactly as they were (also on an exception).
    progress : bool
        Show a tqdm progress bar (only on a terminal, and only if tqdm is installed).
    **optimizer_kwargs
        Passed to the optimizer class.

    Returns
    -------
    LRFindResult

    Notes
    -----
    How the default suggestion (``"robust"``) is chosen, and why:

    1. The losses are smoothed with a running median of 5 before the
       bias-corrected moving average, so an isolated spike (a bad minibatch,
       a first-step transient) neither stops the sweep nor bends the curve.
    2. Only the finite part of the sweep before divergence counts: a NaN, an
       infinity or an early stop shortens the curve instead of poisoning it.
    3. Between the first tenth of the sweep and the minimum of the smoothed
       loss, it picks the learning rate at which the loss falls fastest in
       relative terms: the least-squares slope of log(smoothed loss) against
       log(lr), fitted over a window of a tenth of the sweep.  That is where
       training makes the most progress per unit of learning rate, well before
       the minimum, which sits at the edge of divergence.
    4. The moving average lags the loss by tens of steps, so on a sharp edge
       (a well-conditioned deterministic problem) that point can come close
       to the edge of stability.  The raw loss (median of 5) shows a blow-up
       within a few steps of crossing the edge; the suggestion is capped at a
       quarter of the learning rate where the raw loss first exceeds
       ``diverge`` times its best.

    A deterministic problem with a sharp edge is the hard case for any range
    test: once the stiffest direction has converged, crossing the edge shows
    in the loss only after that direction has grown back, many steps later.
    On noiseless quadratics a coarse sweep (lr growing more than 15% per
    step) can then suggest up to the edge itself; use more steps.

    The relative (log-loss) slope does not depend on the loss's scale, and
    the fitted window averages out the noise that makes a point-wise
    derivative ("steepest", as in fastai) jump around.  The minimum / 10 is a
    rule of thumb that is often too cautious.  fastai's "valley" depends on
    the sweep's length.  ``benchmarks/lr_find_quality.py`` compares all four
    with a grid search on six problems (the table is in README).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> A = np.diag(np.linspace(0.1, 4.0, 20))          # curvature up to L = 4
    >>> def loss_and_grad(ps):
    ...     x, = ps
    ...     return 0.5 * x @ A @ x, [A @ x]
    >>> x = np.ones(20)
    >>> res = etakit.lr_find(loss_and_grad, [x], optimizer=etakit.SGD, start_lr=1e-4, end_lr=10, progress=False)
    >>> bool(res.suggestion < 2 / 4.0), res.stop_reason, float(x[0])   # stable, and x restored
    (True, 'diverged', 1.0)
    """
    if not callable(loss_and_grad):
        raise TypeError(f"loss_and_grad must be callable, got {type(loss_and_grad).__name__}")
    start_lr, end_lr = _check_positive(start_lr, "start_lr"), _check_positive(end_lr, "end_lr")
    if start_lr >= end_lr:
        raise ValueError(f"start_lr ({start_lr}) must be < end_lr ({end_lr})")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 5:
        raise ValueError(f"num_steps must be an integer >= 5, got {num_steps!r}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real) or not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    diverge = _check_positive(diverge, "diverge")
    if diverge <= 1.0:
        raise ValueError(f"diverge must be > 1, got {diverge!r}")

    # Groups' lr become multipliers: build with lr=1 so that unset groups get 1.
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        opt = optimizer(params, lr=1.0, **optimizer_kwargs)
    elif callable(optimizer):
        if optimizer_kwargs:
            raise TypeError("optimizer_kwargs only apply to an optimizer class, not to a factory")
        opt = optimizer(params, 1.0)
    else:
        raise TypeError(f"optimizer must be an etakit optimizer class or a factory f(params, lr), got {optimizer!r}")
    if not isinstance(opt, Optimizer):
        raise TypeError(f"the optimizer factory returned {type(opt).__name__}, not an etakit optimizer")
    if hasattr(opt, "train"):
        opt.train()     # schedule-free optimizers step in train mode
    scales = []
    for i, g in enumerate(opt.param_groups):
        lr = g["lr"]
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"param_groups[{i}]['lr'] is the group's multiplier of the sweep's learning rate "
                             f"and must be a number > 0, got {lr!r}")
        scales.append(float(lr))
    n = int(num_steps)
    sweep = (S.exponential(start_lr, (end_lr / start_lr) ** (1.0 / (n - 1))) if mode == "exp"
             else S.linear(start_lr, end_lr, n - 1))
    for g, s in zip(opt.param_groups, scales):
        g["lr"] = sweep if s == 1.0 else s * sweep

    arrays = [p for g in opt.param_groups for p in g["params"]]
    saved = [p.copy() for p in arrays] if restore else None
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=n, desc="lr_find", unit="step", leave=False, disable=not sys.stderr.isatty())
        except ImportError:
            bar = None
    lrs, losses, smoothed = [], [], []
    stop, avg, best = "completed", 0.0, math.inf
    try:
        for t in range(n):
            lr = sweep(t)
            loss, grads = loss_and_grad(arrays)
            loss = float(loss)
            lrs.append(lr)
            losses.append(loss)
            if not math.isfinite(loss):
                smoothed.append(float("nan"))
                stop = "non-finite"
                break
            window = losses[-_MEDIAN_WINDOW:]
            avg = smooth * avg + (1.0 - smooth) * float(np.median(window))
            s = avg / (1.0 - smooth ** (t + 1))
            smoothed.append(s)
            # diverge x best for positive losses; the same margin above |best| otherwise
            if t > 0 and s > best + (diverge - 1.0) * abs(best):
                stop = "diverged"
                break
            best = min(best, s)
            opt.step(grads)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2e}", loss=f"{s:.4g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        if saved is not None:
            for p, q in zip(arrays, saved):
                np.copyto(p, q)
    settings = dict(start_lr=start_lr, end_lr=end_lr, num_steps=n, mode=mode, smooth=float(smooth),
                    diverge=diverge, optimizer=getattr(optimizer, "__name__", repr(optimizer)))
    return LRFindResult(lrs, losses, smoothed, scales, stop, settings)
