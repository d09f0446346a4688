"""ReduceLROnPlateau: cut the learning rate when a metric stops improving.

PyTorch's rule and arguments.  With a number as ``lr`` it gives PyTorch's
sequence of learning rates for the same metrics.  With a schedule as ``lr``
it scales the schedule instead of replacing it (``plateau_scaled``), so
warmup, then cosine, then plateau reductions compose; the reduced schedule
lives in the optimizer's param_groups and so in its state dict.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from .schedules import Schedule, plateau_scaled

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau:
    """Reduce each group's learning rate by ``factor`` after ``patience`` steps without improvement.

    Parameters
    ----------
    optimizer : etakit.Optimizer or etakit.torch optimizer
        The optimizer whose groups' ``lr`` this scales.
    mode : {"min", "max"}
        Whether the metric should decrease or increase.
    factor : float
        In (0, 1): the multiplier of a reduction.
    patience : int
        Calls of :meth:`step` without improvement tolerated before a reduction.
    threshold : float
        Minimum change that counts as an improvement, relative (``threshold_mode="rel"``)
        or absolute (``"abs"``).
    threshold_mode : {"rel", "abs"}
        How ``threshold`` is read.
    cooldown : int
        Calls after a reduction during which bad calls are not counted.
    min_lr : float or list of float
        Lower bound of the learning rate, for all groups or per group.
    eps : float
        A reduction smaller than this is skipped.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> opt = etakit.SGD([np.zeros(1)], lr=1.0)
    >>> plateau = etakit.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    >>> for loss in [1.0, 1.0, 1.0]:
    ...     plateau.step(loss)
    >>> opt.param_groups[0]["lr"]
    0.5
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0.0, eps: float = 1e-8) -> None:
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "step_count"):
            raise TypeError(f"optimizer must be an etakit optimizer (numpy or etakit.torch), got "
                            f"{type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = _real(factor, "factor")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.patience = _count(patience, "patience")
        self.cooldown = _count(cooldown, "cooldown")
        self.threshold = _real(threshold, "threshold")
        self.eps = _real(eps, "eps")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lr values (one per group), got {len(min_lr)}")
            self.min_lrs = [_real(v, f"min_lr[{i}]") for i, v in enumerate(min_lr)]
        else:
            self.min_lrs = [_real(min_lr, "min_lr")] * n
        self.optimizer, self.mode, self.threshold_mode = optimizer, mode, threshold_mode
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` by more than the threshold.

        Parameters
        ----------
        a : float
            A metric.
        best : float
            The best so far.

        Returns
        -------
        bool
            True if ``a`` counts as an improvement (in the direction of ``mode``).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> p = etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)]), threshold=0.1)
        >>> p.is_better(0.95, 1.0), p.is_better(0.85, 1.0)
        (False, True)
        """
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metric: float) -> None:
        """Record the metric of the latest evaluation; reduce the learning rates if it has plateaued.

        Parameters
        ----------
        metric : float
            The latest value of the monitored quantity (a 0-d array is accepted).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> opt = etakit.SGD([np.zeros(1)], lr=1.0)
        >>> p = etakit.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        >>> p.step(1.0); p.step(1.0); opt.param_groups[0]["lr"]
        0.5
        """
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            try:
                metric = float(metric)   # 0-d arrays and the like
            except (TypeError, ValueError):
                raise TypeError(f"metric must be a real number, got {type(metric).__name__}") from None
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce_lr(self) -> None:
        k = self.optimizer.step_count
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            lr = group["lr"]
            if isinstance(lr, Schedule):
                base, scale = (lr._args["schedule"], lr._args["scale"]) if lr._name == "plateau_scaled" else (lr, 1.0)
                reduced = plateau_scaled(base, scale * self.factor, min_lr)
                if lr(k) - reduced(k) > self.eps:
                    group["lr"] = reduced
            elif callable(lr):
                raise TypeError("ReduceLROnPlateau cannot scale a Python-callable learning rate; "
                                "use an etakit.schedules schedule instead")
            else:
                old = float(lr)
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new

    def state_dict(self) -> dict[str, Any]:
        """Counters and settings as plain values (the reduced learning rates are in the optimizer's).

        Returns
        -------
        dict
            Everything :meth:`load_state_dict` restores.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> p = etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)]))
        >>> p.step(0.5); p.state_dict()["best"]
        0.5
        """
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore counters saved by :meth:`state_dict`.

        Every value is checked as the constructor checks it before anything changes.

        Parameters
        ----------
        state_dict : dict
            What :meth:`state_dict` returned.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> a = etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)])); a.step(0.5)
        >>> b = etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)])); b.load_state_dict(a.state_dict())
        >>> b.best, b.last_epoch
        (0.5, 1)
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = self.state_dict()
        unknown = set(state_dict) - set(mine)
        if unknown:
            raise ValueError(f"unknown ReduceLROnPlateau state: {sorted(unknown)}")
        new = {**mine, **state_dict}
        # every value checked as the constructor checks it, before anything changes
        if new["mode"] not in ("min", "max"):
            raise ValueError(f"loaded mode must be 'min' or 'max', got {new['mode']!r}")
        if new["threshold_mode"] not in ("rel", "abs"):
            raise ValueError(f"loaded threshold_mode must be 'rel' or 'abs', got {new['threshold_mode']!r}")
        factor = _real(new["factor"], "loaded factor")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"loaded factor must be in (0, 1), got {factor!r}")
        checked: dict[str, Any] = dict(factor=factor)
        for key in ("patience", "cooldown", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            checked[key] = _count(new[key], f"loaded {key}")
        for key in ("threshold", "eps"):
            checked[key] = _real(new[key], f"loaded {key}")
        min_lrs = new["min_lrs"]
        if not isinstance(min_lrs, (list, tuple)) or len(min_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"loaded min_lrs must be a list of {len(self.optimizer.param_groups)} values (one "
                             f"per group), got {min_lrs!r}")
        checked["min_lrs"] = [_real(v, f"loaded min_lrs[{i}]") for i, v in enumerate(min_lrs)]
        best = new["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or best != best:
            raise ValueError(f"loaded best must be a number (or +-inf), got {best!r}")
        checked["best"] = float(best)
        checked["mode"], checked["threshold_mode"] = new["mode"], new["threshold_mode"]
        self.__dict__.update(checked)


def _real(v: Any, name: str) -> float:
    try:
        ok = not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) and float(v) >= 0
    except OverflowError:       # an int beyond any double
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    return int(v)
