"""The learning-rate range test: sweep the learning rate upward, watch the loss, confirm the pick.

``lr_find`` runs a short training with a learning rate that grows each step
(exponentially or linearly) from ``start_lr`` to ``end_lr``, records the loss
before each step and stops once the loss has clearly diverged.  It reads a
candidate off the loss curve (smoothed without lag, now that the sweep is
over), then *confirms* it: short trainings at a constant rate from the
restored parameters, with a fresh optimizer, backing off while the loss
grows.  A sweep alone cannot tell where training diverges: on a deterministic
stiff problem the loss keeps falling for a decade of learning rate past the
edge of stability, because the direction that went unstable had converged
before and takes many steps to grow back.  A run from the start shows it at
once.  Parameters are restored bit for bit afterwards.  The sweep and the
runs are etakit schedules and optimizers, so every step runs in C as usual.
"""
from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np
import numpy.typing as npt

from . import schedules as S
from .optim import AdamW, Optimizer

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["lr_find", "LRFindResult", "LRFindWarning"]

_Array = npt.NDArray[np.float64]
# loss_and_grad(arrays) -> (loss, one gradient per array)
LossAndGrad = Callable[[list[npt.NDArray[Any]]], tuple[float, Sequence[npt.NDArray[Any]]]]
# an optimizer class, or a factory f(params, lr) -> optimizer
_FloatSeq = Union[Sequence[float], npt.NDArray[np.float64]]
OptimizerFactory = Union[type[Optimizer], Callable[[Any, float], Optimizer]]

_MEDIAN_WINDOW = 5   # the sweep's causal smoothing: a running median of 5 before the moving average
_WARM = 10           # the sweep checks for divergence from this step on (fewer for short sweeps)
_LEVEL = 0.2         # the candidate: where the curve has made all but this fraction of its drop
_MARGIN = 1.5        # a confirmation run tests this multiple of the learning rate it would suggest
_STEP = 2.0          # the factor between the candidates of successive confirmation runs
_MAX_RUNS = 10       # confirmation runs at most (2**10: three decades)
_EXPLODE = 1000.0    # a run stops at once when its loss climbs this many drops above the start
_COARSE = 3.0        # an exponential sweep growing more than this per step warns (the default range: < 18 steps)
_COARSE_LINEAR = 20  # a linear sweep of fewer steps warns
_NEGLIGIBLE = 1e-3   # runs whose levels differ by less than this fraction of the drop are equally good


class LRFindWarning(UserWarning):
    """Warned when :func:`lr_find` could not suggest a learning rate the usual way.

    The result says why, in ``notes``.

    Examples
    --------
    >>> import warnings, numpy as np, etakit
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = etakit.lr_find(lambda ps: (1.0, [np.zeros(3)]), [np.ones(3)], progress=False)
    >>> caught[0].category.__name__, res.curve
    ('LRFindWarning', 'flat')
    """


# ---- reading the curve --------------------------------------------------------------

def _running_median(y: _FloatSeq, half: int) -> _Array:
    """Centred running median over 2*half + 1 points (shrinking at the ends)."""
    n = len(y)
    return np.array([np.median(y[max(0, i - half):i + half + 1]) for i in range(n)])


def _running_mean(y: _FloatSeq, half: int) -> _Array:
    """Centred running mean over 2*half + 1 points (shrinking at the ends)."""
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    a, b = np.maximum(0, idx - half), np.minimum(len(y), idx + half + 1)
    return (c[b] - c[a]) / (b - a)


def _centred(y: _FloatSeq, half: int) -> _Array:
    """The sweep's curve without lag: a centred running median of 5 (spikes), then a centred mean."""
    return _running_mean(_running_median(np.asarray(y, dtype=np.float64), 2), half)


def _read_curve(lrs: _FloatSeq, losses: _FloatSeq, stop_reason: str) -> dict[str, Any]:
    """What the loss curve says, from its finite part.

    Returns a dict: ``kind`` ("decreasing", "flat", "rising" or "no finite
    loss"), ``l0`` (the starting level), ``sigma`` (the noise of one loss),
    ``n0`` (losses behind ``l0``), ``drop`` (start level minus the curve's
    lowest level), ``trend`` (the centred curve, NaN beyond the part read),
    ``candidate`` (the learning rate read off the curve, NaN if none) and
    ``i_min`` (the index of the curve's lowest point).
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    n = len(y)
    finite = np.isfinite(y)
    nf = int(np.argmin(finite)) if not finite.all() else n
    out: dict[str, Any] = {"kind": "no finite loss", "l0": math.nan, "sigma": 0.0, "n0": 0, "drop": 0.0,
           "trend": np.full(n, np.nan), "candidate": math.nan, "i_min": None}
    if nf == 0:
        return out
    y = y[:nf]
    n0 = int(min(10, max(1, nf // 10)))
    l0 = float(np.median(y[:n0]))
    half = max(1, nf // 25)
    # the part worth reading ends where the loss (median of 3) climbs back above the start by the drop
    med3 = _running_median(y, 1)
    i_lo = int(np.argmin(med3))
    cap = l0 + max(l0 - float(med3[i_lo]), 0.0)
    above = np.nonzero(med3[i_lo:] > cap)[0]
    m = i_lo + int(above[0]) if len(above) else nf
    m = max(m, min(nf, 3))
    part = np.minimum(y[:m], cap) if cap > l0 else y[:m]
    trend = _centred(part, half)
    resid = part - trend
    sigma = float(1.4826 * np.median(np.abs(resid - np.median(resid)))) if m >= 3 else 0.0
    # and at the start, where the rate is too small to move the parameters: the spread of the
    # differences of successive losses (a curve rising from the first step has no noise to speak of)
    first = np.diff(y[:max(n0, 5)])
    if len(first) >= 2:
        sigma = min(sigma, float(1.4826 * np.median(np.abs(first - np.median(first)))) / math.sqrt(2.0))
    out.update(l0=l0, sigma=sigma, n0=n0)
    out["trend"][:m] = trend
    i_min = int(np.argmin(trend))
    lo = float(trend[i_min])
    drop = l0 - lo
    # what the curve's noise and the floating-point rounding of the loss can fake
    tol = 3.0 * sigma / math.sqrt(2 * half + 1) + 1e-9 * max(abs(l0), abs(lo), 1e-300)
    if drop > tol and i_min > 0:
        j = int(np.argmax(trend[:i_min + 1] <= lo + _LEVEL * drop))
        # the loss recorded at step j shows the effect of the step before, taken at lrs[j - 1]
        out.update(kind="decreasing", drop=drop, i_min=i_min, candidate=float(lrs[max(j - 1, 0)]))
        return out
    late = y[-max(3, nf // 3):]
    risen = float(np.median(late)) > l0 + tol or stop_reason in ("diverged", "non-finite")
    out.update(kind="rising" if risen else "flat", i_min=i_min)
    if risen and l0 != 0.0:
        # a curve that only rose says little about the noise (its spread is the rise itself): at most
        # a tenth of the start level, so that the runs from start_lr down can pass
        out["sigma"] = min(sigma, 0.1 * abs(l0))
    return out


def _valley(smoothed: Sequence[float]) -> int:
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


def _classic(lrs: _FloatSeq, smoothed: _FloatSeq) -> dict[str, float]:
    """The classic rules, read as fastai reads them: off the moving average, from its finite part."""
    finite = np.isfinite(smoothed)
    n = int(np.argmin(finite)) if not finite.all() else len(finite)
    if n < 5:
        lr = float(lrs[0]) if n else math.nan
        return {"valley": lr, "steepest": lr, "minimum": lr / 10}
    lrs, smoothed = np.asarray(lrs[:n]), np.asarray(smoothed[:n])
    skip = max(1, n // 10)   # the first averages rest on a few losses only
    i_min = skip + int(np.argmin(smoothed[skip:]))
    steep = np.gradient(smoothed, np.log(lrs))
    i_steep = skip + int(np.argmin(steep[skip:i_min + 1])) if i_min > skip else i_min
    return {"valley": float(lrs[min(_valley(list(smoothed)), n - 1)]), "steepest": float(lrs[i_steep]),
            "minimum": float(lrs[i_min]) / 10.0}


# ---- confirmation runs --------------------------------------------------------------

def _late(c: Sequence[float]) -> tuple[float, float]:
    """A run's late level and its standard error: the mean of its last third.

    The mean, not a median: what training lowers is the expected loss, and a
    skewed minibatch loss (a few examples far off) has a median well below it.
    The standard error counts correlated losses (a momentum oscillation, a
    slow trend) as fewer independent ones: n (1 - r) / (1 + r), with r the
    lag-1 autocorrelation of the losses about their linear trend.
    """
    late = np.asarray(c[-max(1, len(c) // 3):], dtype=np.float64)
    n = len(late)
    if n <= 3:
        return float(np.mean(late)), 0.0
    t = np.arange(n) - (n - 1) / 2.0
    resid = late - late.mean() - t * (float(t @ late) / float(t @ t))
    ss = float(resid @ resid)
    r = float(resid[1:] @ resid[:-1]) / ss if ss > 0 else 0.0
    n_eff = min(n, max(1.0, n * (1.0 - r) / (1.0 + r)))
    return float(np.mean(late)), float(np.std(late, ddof=1)) / math.sqrt(n_eff)


def _judge(c: Sequence[float], l0: float, sigma: float, n0: int, drop: float,
           done: bool) -> tuple[bool, str] | None:
    """The verdict on a confirmation run's losses ``c`` so far: None (go on), or (ok, reason).

    A run fails at once when a loss is not finite, or when the loss (median
    of 3) explodes: climbs above the start level by 1000 times the sweep's
    drop (or 6000 noise levels).  A smaller rise early on is allowed: Adagrad
    and RMSprop take large first steps and recover.  After the last step,
    with e the run's late level (mean of its last third), it fails when

    - e is above the start level by the sweep's drop (or 6 noise levels);
    - e has not come down half the sweep's drop below the start, allowing
      two standard errors, or is not two standard errors below the start
      at all ("too little progress"; after a curve that rose
      from the start: e is not two standard errors below the run's first
      loss or the start level, whichever is lower);
    - e has given back more than half of the run's own gain: the loss grows
      again at the end, an instability on its way.

    The last one allows two standard errors of the noise.
    """
    if not math.isfinite(c[-1]):
        return False, "non-finite loss"
    up = max(drop, 6.0 * sigma, 1e-9 * max(abs(l0), 1e-300))
    if float(np.median(c[-3:])) > l0 + _EXPLODE * up:
        return False, "loss exploded"
    if not done:
        return None
    e, se_e = _late(c)
    se = math.hypot(se_e, 1.25 * sigma / math.sqrt(max(n0, 1)))
    if e > l0 + up:
        return False, "loss above the start"
    if drop > 0 and (e > l0 - 0.5 * drop + 2.0 * se or e > l0 - 2.0 * se):
        return False, "too little progress"     # (a drop the sweep owed to noise is not progress)
    if drop == 0 and e > min(l0, c[0]) - 2.0 * se:   # the start level itself, not the risen median
        return False, "too little progress"
    lo = float(np.min(_centred(np.asarray(c), 1)))
    if e > lo + 0.5 * max(l0 - lo, 0.0) + 2.0 * se_e:
        return False, "loss grew again at the end"
    return True, "ok"


# ---- the result ---------------------------------------------------------------------

class LRFindResult:
    """The outcome of :func:`lr_find`.

    Built by :func:`lr_find`; built directly from a recorded sweep, it reads
    the curve and suggests its candidate, unconfirmed.

    Parameters
    ----------
    lrs, losses, smoothed_losses : array_like
        The sweep, as the attributes of the same names.
    group_scales : list of float
        Each group's learning-rate multiplier.
    stop_reason : str
        As the attribute.
    settings : dict
        The arguments of the sweep (kept as ``settings``).
    suggestion : float, optional
        The confirmed suggestion; default the curve's candidate.
    confirm_runs : list of dict, optional
        As the attribute.
    notes : list of str, optional
        As the attribute.

    Attributes
    ----------
    lrs, losses : ndarray
        The sweep's learning rate (of the first group) and the loss recorded
        before the step with that learning rate.
    smoothed_losses : ndarray
        The causal smoothing the sweep stops on (running median of 5, then a
        bias-corrected moving average), as fastai records it.
    trend : ndarray
        The curve read after the sweep: a centred running median and mean,
        without the moving average's lag (NaN beyond the part read).
    suggestion : float
        The default suggestion (``suggestions["robust"]``) for the first group:
        the curve's candidate, backed off until a confirmation run passed at
        1.5 times it (or raised while runs at 1.5 times a doubled candidate
        pass and do better).  NaN when there is none (``notes`` says why).
    suggestions : dict
        ``"robust"`` (the default), and the classic rules read off the moving
        average as fastai reads them, unconfirmed: ``"valley"``, ``"steepest"``
        and ``"minimum"`` (the minimum's learning rate / 10).
    group_suggestions : list of float
        ``suggestion`` times each group's learning-rate multiplier.
    candidate : float
        The learning rate read off the curve, before confirmation.
    confirm_runs : list of dict
        Each confirmation run: the learning rate it trained at (``lr``), its
        ``steps``, ``ok`` and the ``reason`` for its verdict.
    extra_steps : int
        Steps (calls of ``loss_and_grad``) spent on confirmation runs, on top
        of the sweep's ``len(lrs)``.
    curve : str
        What the curve showed: ``"decreasing"``, ``"flat"``, ``"rising"`` or
        ``"no finite loss"``.
    notes : list of str
        Why the suggestion is unusual, if it is (also issued as an
        :class:`LRFindWarning`).
    stop_reason : str
        ``"completed"``, ``"diverged"`` (smoothed loss above ``diverge`` x the
        best) or ``"non-finite"`` (a NaN or infinite loss).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> res = etakit.lr_find(lambda ps: (float(ps[0] @ ps[0]), [2 * ps[0]]), [np.ones(3)],
    ...                      optimizer=etakit.SGD, start_lr=1e-4, end_lr=10, progress=False)
    >>> sorted(res.suggestions), res.stop_reason, res.curve
    (['minimum', 'robust', 'steepest', 'valley'], 'diverged', 'decreasing')
    >>> res.suggestion < 1.0 and res.confirm_runs[-1]["ok"]   # SGD on |x|^2 diverges above 1
    True
    """

    def __init__(self, lrs: npt.ArrayLike, losses: npt.ArrayLike, smoothed_losses: npt.ArrayLike,
                 group_scales: Iterable[float], stop_reason: str, settings: dict[str, Any], *,
                 suggestion: float | None = None, confirm_runs: Iterable[dict[str, Any]] = (),
                 notes: Iterable[str] = ()) -> None:
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.smoothed_losses = np.asarray(smoothed_losses, dtype=np.float64)
        self.group_scales = list(group_scales)
        self.stop_reason = stop_reason
        self.settings = dict(settings)
        curve = _read_curve(self.lrs, self.losses, stop_reason)
        self.curve = curve["kind"]
        self.trend = curve["trend"]
        self.candidate = curve["candidate"]
        self.confirm_runs = [dict(r) for r in confirm_runs]
        self.extra_steps = int(sum(r["steps"] for r in self.confirm_runs))
        self.notes = list(notes)
        if suggestion is None:   # built from a curve alone: the candidate, unconfirmed
            suggestion = self.candidate
        self.suggestion = float(suggestion)
        self.suggestions = {"robust": self.suggestion, **_classic(self.lrs, self.smoothed_losses)}
        self.group_suggestions = [self.suggestion * s for s in self.group_scales]

    def __repr__(self) -> str:
        return (f"LRFindResult(suggestion={self.suggestion:.3g}, steps={len(self.lrs)}+{self.extra_steps}, "
                f"stop_reason={self.stop_reason!r}, curve={self.curve!r}, suggestions={{"
                + ", ".join(f"{k!r}: {v:.3g}" for k, v in self.suggestions.items()) + "})")

    def to_dict(self) -> dict[str, Any]:
        """Plain data: lists, floats and strings.

        Returns
        -------
        dict
            Every attribute, arrays as lists (JSON-ready).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> res = etakit.lr_find(lambda ps: (float(ps[0] @ ps[0]), [2 * ps[0]]), [np.ones(3)],
        ...                      optimizer=etakit.SGD, start_lr=1e-3, end_lr=0.5, num_steps=20, progress=False)
        >>> len(res.to_dict()["lrs"])
        20
        """
        return {"lrs": self.lrs.tolist(), "losses": self.losses.tolist(),
                "smoothed_losses": self.smoothed_losses.tolist(), "trend": self.trend.tolist(),
                "suggestion": self.suggestion, "suggestions": dict(self.suggestions),
                "group_suggestions": list(self.group_suggestions), "group_scales": list(self.group_scales),
                "candidate": self.candidate, "confirm_runs": [dict(r) for r in self.confirm_runs],
                "extra_steps": self.extra_steps, "curve": self.curve, "notes": list(self.notes),
                "stop_reason": self.stop_reason, "settings": dict(self.settings)}

    def plot(self, path: str | os.PathLike[str] | None = None, ax: Axes | None = None) -> Axes:
        """Loss against learning rate (log scale), with the suggestions and confirmation runs marked.

        Needs matplotlib.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Write the figure there.
        ax : matplotlib.axes.Axes, optional
            Draw on these axes; default a new figure (not attached to pyplot).

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

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
        ax.plot(self.lrs, self.smoothed_losses, color="C0", lw=1, alpha=0.5, ls="--",
                label="moving average (as the sweep saw it)")
        ax.plot(self.lrs, self.trend, color="C0", lw=2, label="centred smoothing (read after the sweep)")
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
            if not (math.isfinite(lr) and lr > 0):
                continue
            color, ls = styles[name]
            lw = 2.2 if name == "robust" else 1.2
            text = f"{name}{' (suggestion)' if name == 'robust' else ''}: {lr:.2g}"
            ax.axvline(lr, color=color, ls=ls, lw=lw, label=text)
        if self.confirm_runs:
            ok = [r["lr"] for r in self.confirm_runs if r["ok"]]
            bad = [r["lr"] for r in self.confirm_runs if not r["ok"]]
            y = ax.get_ylim()[1] if limits is not None else 1.0
            if ok:
                ax.plot(ok, [y] * len(ok), ls="none", marker="v", ms=7, color="C2", clip_on=False,
                        label="confirmation run passed")
            if bad:
                ax.plot(bad, [y] * len(bad), ls="none", marker="x", ms=7, color="C3", clip_on=False,
                        label="confirmation run failed")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss")
        title = f"LR range test ({len(self.lrs)} + {self.extra_steps} steps, {self.stop_reason})"
        if self.curve != "decreasing":
            title += f": {self.curve}, no usual suggestion"
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize="small")
        if path is not None:
            cast("Figure", ax.figure).savefig(path, dpi=120)
        return ax


def _loss_axis_limits(losses: npt.ArrayLike, smoothed: npt.ArrayLike) -> tuple[float, float] | None:
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


def _check_positive(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def _build(optimizer: OptimizerFactory, params: Any,
           optimizer_kwargs: dict[str, Any]) -> tuple[Optimizer, list[float]]:
    """A fresh optimizer with lr = 1, and its groups' learning-rate multipliers."""
    # (Any: the optimizer classes take their own keywords, which optim.py does not annotate yet)
    opt: Any
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        opt = cast(Any, optimizer)(params, lr=1.0, **optimizer_kwargs)
    elif callable(optimizer):
        if optimizer_kwargs:
            raise TypeError("optimizer_kwargs only apply to an optimizer class, not to a factory")
        opt = cast(Callable[[Any, float], Any], optimizer)(params, 1.0)
    else:
        raise TypeError(f"optimizer must be an etakit optimizer class or a factory f(params, lr), got {optimizer!r}")
    if not isinstance(opt, Optimizer):
        raise TypeError(f"the optimizer factory returned {type(opt).__name__}, not an etakit optimizer")
    if hasattr(opt, "train"):
        opt.train()     # schedule-free optimizers step in train mode
    scales: list[float] = []
    for i, g in enumerate(opt.param_groups):
        lr = g["lr"]
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not float(lr) > 0:
            raise ValueError(f"param_groups[{i}]['lr'] is the group's multiplier of the sweep's learning rate "
                             f"and must be a number > 0, got {lr!r}")
        scales.append(float(lr))
    return opt, scales


def lr_find(loss_and_grad: LossAndGrad, params: Any, optimizer: OptimizerFactory = AdamW, start_lr: float = 1e-7,
            end_lr: float = 10.0, num_steps: int = 100, mode: str = "exp", smooth: float = 0.98,
            diverge: float = 4.0, restore: bool = True, progress: bool = True, confirm_steps: int = 30,
            **optimizer_kwargs: Any) -> LRFindResult:
    """LR range test: train briefly with a growing learning rate, suggest one, and confirm it.

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
        Built afresh (``lr=1``, then the groups' rates set) for the sweep and
        for each confirmation run.
    start_lr, end_lr : float
        The sweep's range, ``0 < start_lr < end_lr``.
    num_steps : int
        Number of steps of the full sweep (>= 5; a coarse sweep warns: its
        learning rate growing more than 3x per step, or a linear sweep of
        fewer than 20 steps).
    mode : {"exp", "linear"}
        Exponential (the default: even in log scale) or linear growth.
    smooth : float
        Weight of the exponential moving average of the loss that the sweep
        stops on, in [0, 1).
    diverge : float
        Stop once the smoothed loss exceeds ``diverge`` times its best (> 1;
        precisely: the best plus ``diverge - 1`` times the larger of its
        magnitude and the drop from the start, so that a loss that can be
        negative, or noise about a level near 0, is read alike).  Checked
        from step ``min(10, max(5, num_steps // 10))`` on.
    restore : bool
        Put the parameters back exactly as they were (also on an exception).
        With False they keep the values the sweep left (the confirmation runs
        start from the original values either way).
    progress : bool
        Show a tqdm progress bar (only on a terminal, and only if tqdm is installed).
    confirm_steps : int
        Steps of each confirmation run (>= 5), or 0 to suggest the curve's
        candidate unconfirmed.
    **optimizer_kwargs
        Passed to the optimizer class.

    Returns
    -------
    LRFindResult
        The sweep, the suggestions and the confirmation runs.

    Warns
    -----
    LRFindWarning
        When there is no usual suggestion: a flat curve (NaN), a loss that
        rose from the first step (a rate at or below ``start_lr``), no finite
        loss (NaN), a suggestion below ``start_lr``, no confirmation run
        passing (NaN), or a coarse sweep (see ``num_steps``).

    Notes
    -----
    How the default suggestion (``"robust"``) is chosen, and why:

    1. **The sweep** records the loss before each step; it stops (a causal
       rule: it cannot see the future) once a running median of 5 followed
       by a bias-corrected moving average passes ``diverge`` x its best (see
       ``diverge``), or a loss is not finite.  The best counts from step 10
       on: a noisy loss must not set it from one or two lucky losses.
    2. **The curve**, read after the sweep, is smoothed without lag: a
       centred running median of 5 (against spikes), then a centred mean
       over ±4% of the sweep.  (The moving average lags the loss by tens of
       steps, over a decade of learning rate in a 100-step sweep; every rule
       read off it reads late.)  Only the part before the loss climbs back
       above its start counts.  The starting level is the median of the
       first tenth of the losses; the noise is the spread of the losses
       around the curve.
    3. **The candidate** is the learning rate at which the curve has made
       80% of its drop, from the starting level to its lowest point: the
       start of the valley floor.  This depends neither on the loss's scale
       nor on its offset (a loss shifted negative is read the same) and,
       unlike a slope, not on the noise of a derivative.  The loss recorded
       at a step shows the effect of the step before, so the candidate is
       that step's learning rate.
    4. **Confirmation.**  A sweep cannot see the edge of stability reliably:
       on a deterministic stiff problem the direction that becomes unstable
       has converged before the edge is crossed and grows back only slowly,
       so the curve keeps falling past the edge (more steps make it worse).
       So, from the restored parameters and with a fresh optimizer, a run of
       ``confirm_steps`` steps trains at a constant rate of **1.5 times**
       the candidate.  It fails at once if a loss is not finite or explodes
       (climbs above the start by 1000 times the sweep's drop); at its end it
       must not be above the start, must have come down at least half the
       sweep's drop and must not be rising again (see ``_judge``).  If it
       fails, the candidate is halved and a new run tests 1.5 times that, up
       to 10 runs; the suggestion is the first candidate whose run passed.
       The factor 1.5 is a margin against instabilities that grow too slowly
       to show within the run, and against the noise that grows near the
       edge.  For plain SGD on a quadratic: were the suggestion above the
       stability limit 2/L, its run at 1.5 times it would multiply the stiff
       direction by more than 2 per step from the start (the loss by 4), and
       the run would fail.
    5. **Upward.**  When the first run passed (on a decreasing curve), the
       candidate is doubled while the run at 1.5 times the doubled candidate
       passes and ends lower than the best run so far, by more than 0.1% of
       the sweep's drop (its late level: the mean of its last third).  The
       80% point is cautious on purpose (it is read before the floor, where
       noise cannot move it much); this recovers the factor it leaves, e.g.
       for SGD with momentum, which a sweep reads low.  Where noise decides
       between two runs, the search stops half the time, so it rarely climbs
       more than a doubling or two on noise alone, and every step up is
       itself a passed run at 1.5 times the rate.
    6. **Cost.**  ``extra_steps`` counts the confirmation runs' steps: up to
       ``confirm_steps`` per run, 10 runs at most; a failing run stops as
       soon as its loss explodes or stops being finite.  On the benchmark
       suite it averages about 95 steps on top of a sweep of about 90.
    7. **Groups** keep their ratios: the runs train every group at its
       multiple of the tested rate, so each group's suggestion passed with
       the others.

    Unusual curves: a **flat** loss (no change beyond its noise over the
    whole sweep) gets no suggestion (NaN).  A loss **rising** from the first
    step is tested from ``start_lr`` down (its suggestion is at most
    ``start_lr`` / 1.5, and a note says that it is below ``start_lr``).
    **No finite loss** (the loss at the initial parameters is not finite):
    no suggestion.  Each issues an :class:`LRFindWarning`
    and is listed in ``notes``; ``plot()`` works in every case.

    The classic rules (``valley``, ``steepest``, ``minimum``) are read off
    the moving average as fastai reads them, and are not confirmed; they are
    kept for comparison.  ``benchmarks/lr_find_quality.py`` measures all of
    them against a grid search (the table is on the documentation's benchmarks page).

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
    >>> res.extra_steps > 0            # what the confirmation cost, on top of the sweep's len(res.lrs)
    True
    """
    if not callable(loss_and_grad):
        raise TypeError(f"loss_and_grad must be callable, got {type(loss_and_grad).__name__}")
    start_lr, end_lr = _check_positive(start_lr, "start_lr"), _check_positive(end_lr, "end_lr")
    if start_lr >= end_lr:
        raise ValueError(f"start_lr ({start_lr}) must be < end_lr ({end_lr})")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or int(num_steps) < 5:
        raise ValueError(f"num_steps must be an integer >= 5, got {num_steps!r}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real) or not 0.0 <= float(smooth) < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    smooth = float(smooth)
    diverge = _check_positive(diverge, "diverge")
    if diverge <= 1.0:
        raise ValueError(f"diverge must be > 1, got {diverge!r}")
    if (isinstance(confirm_steps, bool) or not isinstance(confirm_steps, numbers.Integral)
            or not (confirm_steps == 0 or int(confirm_steps) >= 5)):
        raise ValueError(f"confirm_steps must be 0 (no confirmation) or an integer >= 5, got {confirm_steps!r}")
    confirm_steps = int(confirm_steps)

    # Groups' lr become multipliers: build with lr=1 so that unset groups get 1.
    opt, scales = _build(optimizer, params, optimizer_kwargs)
    n = int(num_steps)
    sweep = (S.exponential(start_lr, (end_lr / start_lr) ** (1.0 / (n - 1))) if mode == "exp"
             else S.linear(start_lr, end_lr, n - 1))
    for g, s in zip(opt.param_groups, scales):
        g["lr"] = sweep if s == 1.0 else s * sweep

    arrays = [p for g in opt.param_groups for p in g["params"]]
    saved = [p.copy() for p in arrays]
    bar: Any = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=n, desc="lr_find", unit="step", leave=False, disable=not sys.stderr.isatty())
        except ImportError:
            bar = None
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stop, avg, best = "completed", 0.0, math.inf
    warm, ref = min(_WARM, max(_MEDIAN_WINDOW, n // 10)), math.nan
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    suggestion = math.nan
    after_sweep = None
    try:
        with np.errstate(all="ignore"):    # a diverging run overflows; that is what it measures
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
                # diverge x best for positive losses; the same margin above |best| otherwise, and at
                # least diverge - 1 times the drop from the start (noise about a level near 0 must not
                # count); only after a few steps, when the best no longer rests on one or two losses
                if t == warm - 1:
                    ref = float(np.median(losses))
                if t >= warm:
                    if s > best + (diverge - 1.0) * max(abs(best), ref - best):
                        stop = "diverged"
                        break
                    best = min(best, s)
                opt.step(grads)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(lr=f"{lr:.2e}", loss=f"{s:.4g}", refresh=False)
        after_sweep = [p.copy() for p in arrays] if not restore else None

        curve = _read_curve(lrs, losses, stop)
        ratio = sweep(1) / sweep(0)    # the largest growth per step, in either mode
        if mode == "exp" and ratio > _COARSE:
            notes.append(f"the sweep is coarse (its learning rate grows {ratio:.3g}x per step): "
                         "use more steps for a finer reading")
        elif mode == "linear" and n < _COARSE_LINEAR:
            notes.append(f"the sweep is coarse ({n} linear steps): use more steps for a finer reading")
        kind = curve["kind"]
        if kind == "no finite loss":
            notes.append("the loss at the initial parameters is not finite: no suggestion")
        elif kind == "flat":
            notes.append(f"the loss did not change over the sweep ({start_lr:.3g} .. {lrs[-1]:.3g}): no suggestion; "
                         "check that the gradients reach the parameters, or raise end_lr")
        else:
            if kind == "rising":
                notes.append("the loss rose from the first step: start_lr is already too large; "
                             "testing rates from start_lr down")
                candidate = start_lr / _MARGIN
            else:
                candidate = curve["candidate"]
                # still falling at end_lr: the curve was read to the end, and its last tenth made a
                # fifth of its drop
                n_read = int(np.sum(np.isfinite(curve["trend"])))
                tail = curve["trend"][n_read - max(3, n_read // 10)] - curve["trend"][n_read - 1]
                if stop == "completed" and n_read == len(lrs) and tail > 0.2 * curve["drop"]:
                    notes.append(f"the loss was still falling at end_lr ({lrs[-1]:.3g}): the best rate may lie "
                                 "above the range swept; raise end_lr")
            if confirm_steps == 0:
                suggestion = candidate
            else:
                suggestion = _confirm(loss_and_grad, arrays, saved, optimizer, params, optimizer_kwargs,
                                      candidate, curve, confirm_steps, end_lr, runs, notes, bar,
                                      upward=kind == "decreasing")
            if math.isfinite(suggestion) and suggestion < start_lr:
                notes.append(f"the suggestion {suggestion:.3g} is below start_lr ({start_lr:.3g})")
    finally:
        if bar is not None:
            bar.close()
        back = saved if restore else after_sweep
        if back is not None:
            for p, q in zip(arrays, back):
                np.copyto(p, q)
    for note in notes:
        warnings.warn(f"lr_find: {note}", LRFindWarning, stacklevel=2)
    settings = dict(start_lr=start_lr, end_lr=end_lr, num_steps=n, mode=mode, smooth=float(smooth),
                    diverge=diverge, confirm_steps=int(confirm_steps),
                    optimizer=getattr(optimizer, "__name__", repr(optimizer)))
    return LRFindResult(lrs, losses, smoothed, scales, stop, settings, suggestion=suggestion, confirm_runs=runs,
                        notes=notes)


def _confirm(loss_and_grad: LossAndGrad, arrays: list[npt.NDArray[Any]], saved: list[npt.NDArray[Any]],
             optimizer: OptimizerFactory, params: Any, optimizer_kwargs: dict[str, Any], candidate: float,
             curve: dict[str, Any], steps: int, end_lr: float, runs: list[dict[str, Any]], notes: list[str],
             bar: Any, upward: bool) -> float:
    """The confirmation runs; returns the suggestion (NaN if no run passed) and fills in ``runs`` and ``notes``.

    Each run trains at ``_MARGIN`` times a candidate.  Down: while a run
    fails, the candidate is halved.  Up (once the first run passed, on a
    decreasing curve): the candidate is doubled while the run at its margin
    passes and ends lower than the best run so far, by more than
    ``_NEGLIGIBLE`` of the sweep's drop (late levels: see ``_late``).
    """
    limits: tuple[float, float, int, float] = (curve["l0"], curve["sigma"], curve["n0"], curve["drop"])

    def run(c: float) -> tuple[bool, tuple[float, float]]:
        test = _MARGIN * c
        if bar is not None:
            bar.total += steps
            bar.set_description(f"lr_find: confirming {test:.2g}")
        ok, reason, used, level = _confirm_run(loss_and_grad, arrays, saved, optimizer, params, optimizer_kwargs,
                                               test, steps, limits, bar)
        runs.append({"lr": test, "steps": used, "ok": ok, "reason": reason, "level": level[0]})
        return ok, level

    ok, best = run(candidate)
    if ok:
        while upward and len(runs) < _MAX_RUNS and _MARGIN * _STEP * candidate <= end_lr:
            ok, new = run(candidate * _STEP)
            if not ok:
                break
            if new[0] >= best[0] - _NEGLIGIBLE * curve["drop"]:
                break      # not lower, or by a negligible amount: stay
            candidate *= _STEP
            best = min(best, new)
        return candidate
    while len(runs) < _MAX_RUNS:
        candidate /= _STEP
        ok, _ = run(candidate)
        if ok:
            return candidate
    hint = ("; the loss's noise may hide its progress in a short run: try a larger confirm_steps, or less "
            "noisy losses (larger batches)" if upward else
            "; start_lr is too large for this loss (lower it), or the gradients do not descend (check their sign)")
    notes.append(f"no confirmation run passed (down to {runs[-1]['lr']:.3g}): no suggestion{hint}")
    return math.nan


def _confirm_run(loss_and_grad: LossAndGrad, arrays: list[npt.NDArray[Any]], saved: list[npt.NDArray[Any]],
                 optimizer: OptimizerFactory, params: Any, optimizer_kwargs: dict[str, Any], lr: float, steps: int,
                 limits: tuple[float, float, int, float], bar: Any) -> tuple[bool, str, int, tuple[float, float]]:
    """Train ``steps`` steps at the constant rate ``lr`` from the saved parameters, with a fresh optimizer.

    Returns (ok, reason, steps used, (late level, its standard error)).
    """
    for p, q in zip(arrays, saved):
        np.copyto(p, q)
    opt, scales = _build(optimizer, params, optimizer_kwargs)
    for g, s in zip(opt.param_groups, scales):
        g["lr"] = lr * s
    run_arrays = [p for g in opt.param_groups for p in g["params"]]
    c: list[float] = []
    for k in range(steps):
        loss, grads = loss_and_grad(run_arrays)
        c.append(float(loss))
        verdict = _judge(c, *limits, done=k == steps - 1)
        if bar is not None:
            bar.update(1)
        if verdict is not None:
            return verdict[0], verdict[1], k + 1, _late(c)
        opt.step(grads)
    raise AssertionError("unreachable")
