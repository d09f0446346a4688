"""The training loop's other passes, fused with the step: what both front ends share.

``LoopOptions`` holds an optimizer's global-norm clipping (``global_clipnorm``,
``norm_type``), its policy for non-finite gradients (``nonfinite``) and its
EMA of the parameters (``ema_decay`` with timm ``ModelEmaV3``'s warmup
options), validates them, and turns them into the C step's options
(``etakit._core.Plan.set_loop``).  The numpy optimizers (``etakit.optim``) and
the PyTorch drop-ins (``etakit.torch``) take them as keyword-only arguments.
"""
import math
import numbers
from typing import Any, Optional

import numpy as np

__all__ = ["KEYS", "LoopOptions", "ema_decay_at"]

# keyword-only arguments of every optimizer, with their defaults
KEYS = {
    "global_clipnorm": None,
    "norm_type": 2.0,
    "nonfinite": None,
    "ema_decay": None,
    "ema_warmup": False,
    "ema_warmup_gamma": 1.0,
    "ema_warmup_power": 2.0 / 3.0,
    "ema_min_decay": 0.0,
    "ema_update_after_step": 0,
}

_NONFINITE = {"ignore": 0, "skip": 1, "raise": 2}


def _real(v: Any, name: str, lo: Optional[float] = None, lo_open: bool = False, hi: Optional[float] = None,
          optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        what = "a real number or None" if optional else "a real number"
        raise TypeError(f"{name} must be {what}, got {type(v).__name__} {v!r}")
    x = float(v)
    if x != x or (lo is not None and (x < lo or (lo_open and x == lo))) or (hi is not None and x > hi):
        rng = (f"{'>' if lo_open else '>='} {lo}" if lo is not None else "") + \
              (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"Invalid {name}: {v!r} (expected {rng.strip()})")
    return x


def ema_decay_at(step: int, decay: float, warmup: bool = False, gamma: float = 1.0, power: float = 2.0 / 3.0,
                 min_decay: float = 0.0, update_after_step: int = 0) -> float:
    """The EMA decay of update ``step`` (1 for the first), as timm's ``ModelEmaV3.get_decay(step)``.

    0 for the first update after ``update_after_step`` (the average starts as
    a copy of the parameters); with ``warmup``, ``1 - (1 + s / gamma) ** -power``
    clamped to ``[min_decay, decay]``, s counting from that update.

    Examples
    --------
    >>> ema_decay_at(1, 0.999), ema_decay_at(2, 0.999)
    (0.0, 0.999)
    >>> round(ema_decay_at(2, 0.999, warmup=True), 4)
    0.37
    """
    s = max(0, step - update_after_step - 1)
    if s <= 0:
        return 0.0
    if warmup:
        d = 1 - (1 + s / gamma) ** -power
        return max(min(d, decay), min_decay)
    return decay


class LoopOptions:
    """An optimizer's fused clipping, non-finite policy and EMA (see the module docstring)."""

    __slots__ = ("global_clipnorm", "norm_type", "nonfinite", "ema_decay", "ema_warmup", "ema_warmup_gamma",
                 "ema_warmup_power", "ema_min_decay", "ema_update_after_step")
    # (declared for the type checker; __setattr__ checks and converts every value)
    global_clipnorm: Optional[float]
    norm_type: float
    nonfinite: Optional[str]
    ema_decay: Optional[float]
    ema_warmup: bool
    ema_warmup_gamma: float
    ema_warmup_power: float
    ema_min_decay: float
    ema_update_after_step: int

    def __init__(self, **kw: Any) -> None:
        for k, v in KEYS.items():
            object.__setattr__(self, k, v)
        for k, v in kw.items():
            setattr(self, k, v)

    def __setattr__(self, name: str, v: Any) -> None:
        if name == "global_clipnorm":
            v = _real(v, name, 0.0, True, optional=True)
        elif name == "norm_type":
            if isinstance(v, str) and v == "inf":
                v = math.inf
            v = _real(v, name)
            if v not in (2.0, math.inf):
                raise ValueError(f"Invalid norm_type: {v!r} (the fused clipping takes 2 or float('inf'); "
                                 "etakit.clip_grad_norm_ takes any order)")
        elif name == "nonfinite":
            if v is not None and v not in _NONFINITE:
                raise ValueError(f"Invalid nonfinite: {v!r} (expected 'raise', 'skip', 'ignore' or None)")
        elif name == "ema_decay":
            v = _real(v, name, 0.0, False, 1.0, optional=True)
        elif name == "ema_warmup":
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"ema_warmup must be True or False, got {type(v).__name__} {v!r}")
            v = bool(v)
        elif name == "ema_warmup_gamma":
            v = _real(v, name, 0.0, True)
        elif name == "ema_warmup_power":
            v = _real(v, name, 0.0, True)
        elif name == "ema_min_decay":
            v = _real(v, name, 0.0, False, 1.0)
        elif name == "ema_update_after_step":
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"Invalid ema_update_after_step: {v!r} (expected an integer >= 0)")
            v = int(v)
        else:
            raise AttributeError(name)
        object.__setattr__(self, name, v)

    @property
    def policy(self) -> str:
        """The non-finite policy in force: the one given, or by default "raise" when a norm is made
        anyway (clipping), where the check costs nothing, and "ignore" otherwise (as torch.optim)."""
        if self.nonfinite is not None:
            return self.nonfinite
        return "raise" if self.global_clipnorm is not None else "ignore"

    @property
    def makes_norm(self) -> bool:
        return self.global_clipnorm is not None or self.policy != "ignore"

    def decay(self, step: int) -> float:
        """The EMA's decay at update ``step`` (0.0 without an EMA)."""
        if self.ema_decay is None:
            return 0.0
        return ema_decay_at(step, self.ema_decay, self.ema_warmup, self.ema_warmup_gamma, self.ema_warmup_power,
                            self.ema_min_decay, self.ema_update_after_step)

    def set_plan(self, plan: Any, step: int, grad_scale: Optional[float] = None) -> None:
        """Hand the options for update ``step`` (1 for the first) to the plan."""
        w = 1.0 - self.decay(step) if self.ema_decay is not None else 0.0
        plan.set_loop(float(grad_scale) if grad_scale is not None else 0.0,
                      self.global_clipnorm or 0.0, self.norm_type == math.inf, _NONFINITE[self.policy], False, w)


def check_grad_scale(v: Any) -> Optional[float]:
    """A loss scale handed to a step: None, or a finite number > 0."""
    if v is None:
        return None
    x = _real(v, "grad_scale", 0.0, True)
    if math.isinf(x):
        raise ValueError(f"Invalid grad_scale: {v!r} (expected a finite number > 0)")
    return x
