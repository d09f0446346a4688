"""Learning-rate schedules: pure functions of the step count, evaluated in C.

Every schedule ``s`` is a function of ``k``, the number of completed
optimizer steps (from 0): ``s(k)`` is the value the (k+1)-th step uses.
Because schedules are pure functions, they compose freely (``join``,
``warmup``, ``0.5 * s``), resume exactly from a checkpoint, and cost no
Python call per optimizer step: pass one as ``lr=`` (or ``momentum=``,
``betas=(s, beta2)``, ``weight_decay=``) and the C step evaluates it.

Semantics follow the libraries users switch from, so the numbers are the
same: PyTorch's ``lr_scheduler`` (stepped once per optimizer step), timm's
cycle decay, transformers' warmup schedules, optax's ``join_schedules``.
Where those libraries do something surprising past the end of a schedule,
etakit holds the final value instead; each docstring says so.

Examples
--------
>>> from etakit import schedules as S
>>> s = S.warmup(S.cosine(1e-3, total_steps=900), warmup_steps=100)
>>> round(s(50), 7), s(100), s(1000)
(0.0005, 0.001, 0.0)
>>> s.values(4)
array([0.e+00, 1.e-05, 2.e-05, 3.e-05])
>>> S.from_dict(s.to_dict()) == s
True
"""
from __future__ import annotations

import ast
import inspect
import itertools
import math
import numbers
import re
import reprlib

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import _core

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_F = TypeVar("_F", bound=Callable[..., "Schedule"])

__all__ = [
    "Schedule", "constant", "linear", "step", "multistep", "exponential", "polynomial", "cosine",
    "cosine_restarts", "one_cycle", "one_cycle_momentum", "cyclic", "inverse_sqrt", "warmup_cosine", "wsd",
    "piecewise_constant", "join", "warmup", "scale", "from_dict", "parse",
]

# node kinds: the order of etk_sched_kind in csrc/etakit.h
(_CONSTANT, _LINEAR, _STEP, _MULTISTEP, _EXPONENTIAL, _POLYNOMIAL, _COSINE, _COSINE_RESTARTS, _ONE_CYCLE,
 _CYCLIC, _INVERSE_SQRT, _WARMUP_COSINE, _WSD, _PIECEWISE, _JOIN, _WARMUP, _SCALE, _PLATEAU) = range(18)

_REGISTRY: dict[str, Callable[..., Schedule]] = {}

# Resource bounds.  A schedule's plain-data form (``to_dict``) has at most
# MAX_ITEMS items (dicts, lists and scalars, counted along the tree) and is at
# most MAX_DEPTH containers deep; every schedule is built within them, so
# from_dict (and pickle, which goes through it) reads back any schedule, and
# rejects anything larger before building.  ``parse`` reads at most
# PARSE_MAX_CHARS characters and PARSE_MAX_NODES syntax nodes, nested at most
# PARSE_MAX_DEPTH deep, and checks all three before evaluating anything.
MAX_ITEMS = 1_000_000
MAX_DEPTH = 64
PARSE_MAX_CHARS = 20_000
PARSE_MAX_NODES = 10_000
PARSE_MAX_DEPTH = 100
MAX_STEP = 2**63 - 1            # a step count k is an int64 in C
MAX_COUNT = 2**62               # integral schedule parameters (ETK_SCHED_INT_MAX in csrc/schedule.c)


def _register(fn: _F) -> _F:
    _REGISTRY[fn.__name__] = fn
    return fn


# (the constructor's arguments are internal: schedules are built by this module's functions)
class Schedule:  # numpydoc ignore=PR01
    """A learning-rate schedule: ``s(k)`` for ``k`` completed steps.

    Built by the functions of this module (``cosine(...)``, ``join(...)``,
    ...), not directly.  Immutable; compares equal to a schedule with the same
    definition.

    Examples
    --------
    >>> from etakit import schedules as S
    >>> s = S.step(0.1, step_size=30, gamma=0.5)
    >>> s
    step(lr=0.1, step_size=30, gamma=0.5)
    >>> s(29), s(30), (2 * s)(30)
    (0.1, 0.05, 0.1)
    """

    __slots__ = ("_name", "_args", "_kind", "_mode", "_params", "_data", "_children", "_c", "_size", "_depth")

    def __init__(self, name: str, args: dict[str, Any], kind: int, params: Sequence[float] = (), mode: int = 0,
                 data: Sequence[float] = (), children: Sequence[Schedule] = ()) -> None:
        self._name, self._args, self._kind, self._mode = name, dict(args), kind, mode
        self._params = [float(p) for p in params]
        self._data = [float(d) for d in data]
        self._children = tuple(children)
        # the size and depth of to_dict(), counted as from_dict counts them
        self._size, self._depth = 2, 1
        for v in self._args.values():
            if isinstance(v, Schedule):
                self._size += v._size
                self._depth = max(self._depth, 1 + v._depth)
            elif isinstance(v, (list, tuple)):
                self._size += 1
                self._depth = max(self._depth, 2)
                for x in v:
                    self._size += x._size if isinstance(x, Schedule) else 1
                    if isinstance(x, Schedule):
                        self._depth = max(self._depth, 2 + x._depth)
            else:
                self._size += 1
        if self._size > MAX_ITEMS:
            raise ValueError(f"{name}: the schedule is too large ({self._size} items in its to_dict() form; "
                             f"the limit is {MAX_ITEMS})")
        if self._depth > MAX_DEPTH:
            raise ValueError(f"{name}: schedules nested too deeply ({self._depth} levels in the to_dict() form; "
                             f"the limit is {MAX_DEPTH})")
        nodes: list[tuple[Any, ...]] = []
        flat: list[float] = []
        self._emit(nodes, flat)
        self._c = _core.CompiledSchedule(nodes, flat)

    def _emit(self, nodes: list[tuple[Any, ...]], data: list[float]) -> int:
        ids = [c._emit(nodes, data) for c in self._children]
        d = self._data + [float(i) for i in ids] if self._kind == _JOIN else self._data
        child = ids[0] if self._kind in (_WARMUP, _SCALE, _PLATEAU) else -1
        nodes.append((self._kind, self._mode, child, len(data), len(d), self._params))
        data.extend(d)
        return len(nodes) - 1

    def __call__(self, k: int) -> float:
        """The value after ``k`` completed steps.

        Parameters
        ----------
        k : int
            Completed optimizer steps, ``0 <= k <= 2**63 - 1``.

        Returns
        -------
        float
            The value the ``(k + 1)``-th step uses.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> S.exponential(1.0, 0.5)(2)
        0.25
        """
        return self._c.eval(_step_count(k))

    def __reduce__(self) -> tuple[Callable[[dict[str, Any]], Schedule], tuple[dict[str, Any]]]:
        # the compiled C form is rebuilt from the plain-data form: pickle and deepcopy
        return from_dict, (self.to_dict(),)

    def values(self, steps: int, start: int = 0) -> npt.NDArray[np.float64]:
        """``[s(start), ..., s(start + steps - 1)]`` as a float64 array, computed in C.

        Parameters
        ----------
        steps : int
            How many values (``>= 0``).
        start : int
            The first step count.

        Returns
        -------
        ndarray
            The values (float64, ``steps`` of them), equal to calling the schedule at each step.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> S.linear(1.0, 0.0, steps=4).values(6)
        array([1.  , 0.75, 0.5 , 0.25, 0.  , 0.  ])
        """
        start, steps = _step_count(start, "start"), _step_count(steps, "steps")
        if steps and start + steps - 1 > MAX_STEP:
            raise ValueError(f"start + steps - 1 = {start + steps - 1} is past the largest step count 2**63 - 1")
        return self._c.values(start, steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (nested dicts, lists, numbers, strings); see :func:`from_dict`.

        Returns
        -------
        dict
            ``{"type": name, **arguments}``, schedules among the arguments as dicts too.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> S.warmup(S.constant(0.1), 10).to_dict()
        {'type': 'warmup', 'schedule': {'type': 'constant', 'lr': 0.1}, 'warmup_steps': 10, 'start_lr': 0.0}
        """
        out: dict[str, Any] = {"type": self._name}
        for k, v in self._args.items():
            if isinstance(v, Schedule):
                v = v.to_dict()
            elif isinstance(v, (list, tuple)):
                v = [x.to_dict() if isinstance(x, Schedule) else x for x in v]
            out[k] = v
        return out

    def __repr__(self) -> str:
        if self._name == "scale":
            inner = self._args["schedule"]
            # (a * s) parenthesised: a * b * s would parse as (a * b) * s, a different schedule
            return f"{self._args['factor']!r} * " + (f"({inner!r})" if inner._name == "scale" else repr(inner))
        return f"{self._name}({', '.join(f'{k}={v!r}' for k, v in self._args.items())})"

    def label(self) -> str:
        """A compact repr: only the arguments that differ from their defaults.

        Returns
        -------
        str
            Used as the legend of :meth:`plot`.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> S.cosine(0.1, 100).label()
        'cosine(0.1, 100)'
        """
        if self._name == "scale":
            inner = self._args["schedule"]
            return f"{self._args['factor']:g} * " + (f"({inner.label()})" if inner._name == "scale" else inner.label())
        params = inspect.signature(_REGISTRY[self._name]).parameters
        parts: list[str] = []
        for i, (k, v) in enumerate(self._args.items()):
            p = params[k]
            if p.default is not inspect.Parameter.empty and v == p.default:
                continue
            text = v.label() if isinstance(v, Schedule) else \
                "[" + ", ".join(x.label() for x in v) + "]" if k == "schedules" else \
                f"{v:g}" if isinstance(v, float) else repr(v)
            parts.append(text if p.default is inspect.Parameter.empty and len(parts) == i else f"{k}={text}")
        return f"{self._name}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __mul__(self, factor: float) -> Schedule:
        if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
            return scale(self, factor)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Schedule:
        if isinstance(divisor, numbers.Real) and not isinstance(divisor, bool):
            return scale(self, 1.0 / _positive(divisor, "divisor", "scale"))
        return NotImplemented

    def horizon(self) -> int:
        """A number of steps that shows the whole shape (used to plot).

        Returns
        -------
        int
            Somewhat past the last step at which the schedule changes shape.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> S.cosine(0.1, 1000).horizon()
        1101
        """
        ends: list[int] = [v for k, v in self._args.items() if isinstance(v, int) and ("steps" in k or "period" in k
                                                                          or k in ("step_size", "step_size_up"))]
        ends += [max(v) for k, v in self._args.items() if k in ("milestones", "boundaries") and v]
        ends += [c.horizon() + sum(self._args.get("boundaries", []) or [0]) for c in self._children]
        if self._name == "wsd":
            ends.append(self._args["warmup_steps"] + self._args["stable_steps"] + self._args["decay_steps"])
        if self._name == "cosine_restarts":
            p, m = self._args["first_period"], self._args["period_mult"]
            ends.append(p * (1 + m + m * m))
        if self._name == "cyclic":
            up = self._args["step_size_up"]
            ends.append(4 * (up + (self._args["step_size_down"] or up)))
        return int(max(ends, default=1000) * 1.1) + 1

    def plot(self, total_steps: int | None = None, ax: Axes | None = None, path: str | None = None,
             label: str | None = None) -> Axes:
        """Plot the schedule over ``total_steps``.

        Needs matplotlib (the ``plot`` extra).

        Parameters
        ----------
        total_steps : int, optional
            Steps to plot; default :meth:`horizon`.
        ax : matplotlib.axes.Axes, optional
            Draw on these axes; default a new figure (not attached to pyplot).
        path : str, optional
            Write the figure there (PNG, SVG, ... by extension).
        label : str, optional
            The legend entry; default :meth:`label`.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> from etakit import schedules as S
        >>> ax = S.cosine(0.1, 100).plot()          # doctest: +SKIP
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install 'etakit[plot]'") from None
        n = self.horizon() if total_steps is None else _step_count(total_steps, "total_steps")
        if ax is None:
            fig = Figure(figsize=(7, 3.5), layout="constrained")
            ax = fig.subplots()
        ax.plot(np.arange(n), self.values(n), label=label or self.label())
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        if path is not None:
            ax.legend(fontsize="small", loc="best")
            cast("Figure", ax.figure).savefig(path, dpi=120)
        return ax


# ------------------------------------------------------------ validation

def _step_count(k: Any, what: str = "k") -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{what} must be an integer step count, got {type(k).__name__} {k!r}")
    n = int(k)
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {k}")
    if n > MAX_STEP:
        raise ValueError(f"{what} must be <= 2**63 - 1 (step counts are 64-bit integers), got {k}")
    return n


def _real(v: Any, name: str, fn: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__} {v!r}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{fn}: {name} must be finite, got {v!r}")
    return f


def _rate(v: Any, name: str, fn: str) -> float:
    f = _real(v, name, fn)
    if f < 0:
        raise ValueError(f"{fn}: {name} must be >= 0, got {v!r}")
    return f


def _positive(v: Any, name: str, fn: str) -> float:
    f = _real(v, name, fn)
    if f <= 0:
        raise ValueError(f"{fn}: {name} must be > 0, got {v!r}")
    return f


def _count(v: Any, name: str, fn: str, lo: int = 1) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(v).__name__} {v!r}")
    n = int(v)
    if n < lo:
        raise ValueError(f"{fn}: {name} must be an integer >= {lo}, got {v!r}")
    if n > MAX_COUNT:
        raise ValueError(f"{fn}: {name} must be an integer <= 2**62, got {v!r}")
    return n


def _choice(v: Any, name: str, fn: str, options: list[str]) -> int:
    if v not in options:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return options.index(v)


def _bounded_list(vs: Any, name: str, fn: str, what: str) -> list[Any]:
    """``vs`` as a list, refused (before reading it all) beyond MAX_ITEMS entries."""
    if isinstance(vs, (str, bytes, dict)) or not hasattr(vs, "__iter__"):
        raise TypeError(f"{fn}: {name} must be a list of {what}, got {type(vs).__name__}")
    n = len(vs) if hasattr(vs, "__len__") else None
    out = list(vs if n is not None and n <= MAX_ITEMS else itertools.islice(vs, MAX_ITEMS + 1))
    if (n if n is not None else len(out)) > MAX_ITEMS:
        raise ValueError(f"{fn}: {name} has more than {MAX_ITEMS} entries")
    return out


def _sorted_counts(vs: Any, name: str, fn: str, strict: bool = False) -> list[int]:
    vs = _bounded_list(vs, name, fn, "step counts")
    out = [_count(v, f"{name}[{i}]", fn, 0) for i, v in enumerate(vs)]
    for i in range(1, len(out)):
        if out[i] < out[i - 1] or (strict and out[i] == out[i - 1]):
            raise ValueError(f"{fn}: {name} must be {'strictly increasing' if strict else 'sorted'}, got {out}")
    return out


def _schedule(v: Any, name: str, fn: str) -> Schedule:
    if not isinstance(v, Schedule):
        raise TypeError(f"{fn}: {name} must be an etakit schedule, got {type(v).__name__}")
    return v


# ------------------------------------------------------------- schedules

@_register
def constant(lr: float) -> Schedule:
    """``lr`` at every step.

    Parameters
    ----------
    lr : float
        The value, >= 0.

    Returns
    -------
    Schedule
        The constant schedule.

    Examples
    --------
    >>> constant(0.1)(10**9)
    0.1
    """
    lr = _rate(lr, "lr", "constant")
    return Schedule("constant", dict(lr=lr), _CONSTANT, [lr])


@_register
def linear(start_lr: float, end_lr: float, steps: int) -> Schedule:
    """From ``start_lr`` to ``end_lr`` linearly over ``steps`` steps, then ``end_lr``.

    Parameters
    ----------
    start_lr, end_lr : float
        The values at step 0 and from step ``steps`` on, >= 0.
    steps : int
        Length of the ramp, >= 1.

    Returns
    -------
    Schedule
        The linear ramp.

    Examples
    --------
    >>> linear(0.0, 1.0, steps=10)(5)
    0.5
    """
    a, b = _rate(start_lr, "start_lr", "linear"), _rate(end_lr, "end_lr", "linear")
    n = _count(steps, "steps", "linear")
    return Schedule("linear", dict(start_lr=a, end_lr=b, steps=n), _LINEAR, [a, b, n])


@_register
def step(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (k // step_size)``: PyTorch's ``StepLR`` stepped once per step.

    Parameters
    ----------
    lr : float
        The initial value, >= 0.
    step_size : int
        Steps between decays, >= 1.
    gamma : float
        The factor of each decay, >= 0.

    Returns
    -------
    Schedule
        The step decay.

    Examples
    --------
    >>> s = step(1.0, step_size=10, gamma=0.5)
    >>> s(9), s(10), s(25)
    (1.0, 0.5, 0.25)
    """
    lr, g = _rate(lr, "lr", "step"), _rate(gamma, "gamma", "step")
    n = _count(step_size, "step_size", "step")
    return Schedule("step", dict(lr=lr, step_size=n, gamma=g), _STEP, [lr, n, g])


@_register
def multistep(lr: float, milestones: Iterable[int], gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (number of milestones <= k)``: PyTorch's ``MultiStepLR``.

    A milestone listed twice applies ``gamma`` twice, as in PyTorch.

    Parameters
    ----------
    lr : float
        The initial value, >= 0.
    milestones : list of int
        Step counts at which ``gamma`` applies, sorted.
    gamma : float
        The factor applied at each milestone, >= 0.

    Returns
    -------
    Schedule
        The multi-step decay.

    Examples
    --------
    >>> s = multistep(1.0, [10, 20], gamma=0.1)
    >>> s(9), s(10), round(s(20), 12)
    (1.0, 0.1, 0.01)
    """
    lr, g = _rate(lr, "lr", "multistep"), _rate(gamma, "gamma", "multistep")
    ms = _sorted_counts(milestones, "milestones", "multistep")
    return Schedule("multistep", dict(lr=lr, milestones=ms, gamma=g), _MULTISTEP, [lr, g], data=ms)


@_register
def exponential(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** k``: PyTorch's ``ExponentialLR``.

    Parameters
    ----------
    lr : float
        The initial value, >= 0.
    gamma : float
        The factor per step, >= 0.

    Returns
    -------
    Schedule
        The exponential decay.

    Examples
    --------
    >>> exponential(1.0, 0.5)(3)
    0.125
    """
    lr, g = _rate(lr, "lr", "exponential"), _rate(gamma, "gamma", "exponential")
    return Schedule("exponential", dict(lr=lr, gamma=g), _EXPONENTIAL, [lr, g])


@_register
def polynomial(lr: float, total_steps: int, power: float = 1.0, end_lr: float = 0.0) -> Schedule:
    """``(lr - end_lr) * (1 - min(k, T) / T) ** power + end_lr``.

    PyTorch's ``PolynomialLR(total_iters=T, power)`` when ``end_lr = 0``.

    Parameters
    ----------
    lr : float
        The initial value, >= 0.
    total_steps : int
        ``T``, the step at which ``end_lr`` is reached, >= 1.
    power : float
        The exponent, >= 0.
    end_lr : float
        The final value, >= 0.

    Returns
    -------
    Schedule
        The polynomial decay.

    Examples
    --------
    >>> s = polynomial(1.0, total_steps=4, power=2.0)
    >>> s(2), s(4), s(100)
    (0.25, 0.0, 0.0)
    """
    lr, e = _rate(lr, "lr", "polynomial"), _rate(end_lr, "end_lr", "polynomial")
    T = _count(total_steps, "total_steps", "polynomial")
    p = _rate(power, "power", "polynomial")
    return Schedule("polynomial", dict(lr=lr, total_steps=T, power=p, end_lr=e), _POLYNOMIAL, [lr, T, p, e])


@_register
def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Cosine annealing from ``lr`` to ``min_lr`` over ``total_steps``, then ``min_lr``.

    PyTorch's ``CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)`` up to
    ``total_steps``; PyTorch's then rises again, this holds ``min_lr``.

    Parameters
    ----------
    lr : float
        The initial value, >= 0.
    total_steps : int
        Steps of the half cosine, >= 1.
    min_lr : float
        The final value, >= 0.

    Returns
    -------
    Schedule
        The cosine annealing.

    Examples
    --------
    >>> s = cosine(1.0, total_steps=100, min_lr=0.1)
    >>> s(0), round(s(50), 12), s(100), s(10**6)
    (1.0, 0.55, 0.1, 0.1)
    """
    lr, m = _rate(lr, "lr", "cosine"), _rate(min_lr, "min_lr", "cosine")
    T = _count(total_steps, "total_steps", "cosine")
    return Schedule("cosine", dict(lr=lr, total_steps=T, min_lr=m), _COSINE, [lr, T, m])


@_register
def cosine_restarts(lr: float, first_period: int, period_mult: int = 1, min_lr: float = 0.0,
                    decay: float = 1.0) -> Schedule:
    """Cosine annealing with warm restarts (PyTorch's ``CosineAnnealingWarmRestarts``).

    Cycle ``i`` lasts ``first_period * period_mult ** i`` steps and starts at
    ``lr * decay ** i`` (timm's ``cycle_decay``); each anneals to ``min_lr``.

    Parameters
    ----------
    lr : float
        The value at the start of the first cycle, >= 0.
    first_period : int
        Steps of the first cycle, >= 1 (PyTorch's ``T_0``).
    period_mult : int
        Each cycle is this many times longer than the one before, >= 1 (``T_mult``).
    min_lr : float
        The value each cycle anneals to, >= 0 (``eta_min``).
    decay : float
        Each cycle starts at this times the previous cycle's start, >= 0.

    Returns
    -------
    Schedule
        The cosine with restarts.

    Examples
    --------
    >>> s = cosine_restarts(1.0, first_period=10, period_mult=2, decay=0.5)
    >>> s(0), s(10), s(30)
    (1.0, 0.5, 0.25)
    """
    lr, m = _rate(lr, "lr", "cosine_restarts"), _rate(min_lr, "min_lr", "cosine_restarts")
    T0 = _count(first_period, "first_period", "cosine_restarts")
    mult = _count(period_mult, "period_mult", "cosine_restarts")
    d = _rate(decay, "decay", "cosine_restarts")
    return Schedule("cosine_restarts", dict(lr=lr, first_period=T0, period_mult=mult, min_lr=m, decay=d),
                    _COSINE_RESTARTS, [lr, T0, mult, m, d])


def _one_cycle_args(fn: str, total_steps: Any, pct_start: Any, anneal: Any) -> tuple[int, float, int]:
    T = _count(total_steps, "total_steps", fn, 2)
    pct = _real(pct_start, "pct_start", fn)
    if not 0.0 < pct < 1.0:
        raise ValueError(f"{fn}: pct_start must be in (0, 1), got {pct_start!r}")
    return T, pct, _choice(anneal, "anneal", fn, ["cos", "linear"])


@_register
def one_cycle(max_lr: float, total_steps: int, pct_start: float = 0.3, anneal: str = "cos",
              div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> Schedule:
    """The 1cycle learning rates of PyTorch's ``OneCycleLR``.

    From ``max_lr / div_factor`` up to ``max_lr`` over ``pct_start`` of the
    steps, then down to ``max_lr / div_factor / final_div_factor``
    (``three_phase``: back to the start value first, as PyTorch does).
    Past ``total_steps`` (where PyTorch raises) the last value is held.

    Parameters
    ----------
    max_lr : float
        The peak, >= 0.
    total_steps : int
        Length of the cycle, >= 1.
    pct_start : float
        Fraction of the steps spent rising, in [0, 1].
    anneal : {"cos", "linear"}
        The shape of each phase (PyTorch's ``anneal_strategy``).
    div_factor : float
        The start is ``max_lr / div_factor``, > 0.
    final_div_factor : float
        The end is the start divided by this, > 0.
    three_phase : bool
        Come back down to the start before the final decay, as PyTorch does.

    Returns
    -------
    Schedule
        The 1cycle learning rates.

    Examples
    --------
    >>> s = one_cycle(1.0, total_steps=100)
    >>> round(s(0), 12), s(29), round(s(99), 12)
    (0.04, 1.0, 4e-06)
    """
    T, pct, mode = _one_cycle_args("one_cycle", total_steps, pct_start, anneal)
    mx = _rate(max_lr, "max_lr", "one_cycle")
    div = _positive(div_factor, "div_factor", "one_cycle")
    fdiv = _positive(final_div_factor, "final_div_factor", "one_cycle")
    init = mx / div
    args = dict(max_lr=mx, total_steps=T, pct_start=pct, anneal=anneal, div_factor=div,
                final_div_factor=fdiv, three_phase=bool(three_phase))
    return Schedule("one_cycle", args, _ONE_CYCLE, [T, pct, init, mx, init / fdiv],
                    mode=mode | (2 if three_phase else 0))


@_register
def one_cycle_momentum(total_steps: int, pct_start: float = 0.3, anneal: str = "cos",
                       base_momentum: float = 0.85, max_momentum: float = 0.95,
                       three_phase: bool = False) -> Schedule:
    """The momentum cycle that goes with :func:`one_cycle` (PyTorch's ``cycle_momentum``).

    Down from ``max_momentum`` to ``base_momentum`` while the learning rate
    rises, then back up.  Use it as ``momentum=`` (SGD, RMSprop) or as
    ``betas=(one_cycle_momentum(...), 0.999)`` (Adam).

    Parameters
    ----------
    total_steps : int
        Length of the cycle, >= 1 (the same as :func:`one_cycle`'s).
    pct_start : float
        Fraction of the steps spent falling, in [0, 1].
    anneal : {"cos", "linear"}
        The shape of each phase.
    base_momentum, max_momentum : float
        The lowest and highest momentum, >= 0.
    three_phase : bool
        As for :func:`one_cycle`.

    Returns
    -------
    Schedule
        The momentum cycle.

    Examples
    --------
    >>> s = one_cycle_momentum(100)
    >>> s(0), s(29), s(99)
    (0.95, 0.85, 0.95)
    """
    T, pct, mode = _one_cycle_args("one_cycle_momentum", total_steps, pct_start, anneal)
    lo = _rate(base_momentum, "base_momentum", "one_cycle_momentum")
    hi = _rate(max_momentum, "max_momentum", "one_cycle_momentum")
    args = dict(total_steps=T, pct_start=pct, anneal=anneal, base_momentum=lo, max_momentum=hi,
                three_phase=bool(three_phase))
    return Schedule("one_cycle_momentum", args, _ONE_CYCLE, [T, pct, hi, lo, hi],
                    mode=mode | (2 if three_phase else 0))


@_register
def cyclic(base_lr: float, max_lr: float, step_size_up: int = 2000, step_size_down: int | None = None,
           mode: str = "triangular", gamma: float = 1.0) -> Schedule:
    """PyTorch's ``CyclicLR`` learning rates (triangular, triangular2, exp_range).

    Parameters
    ----------
    base_lr, max_lr : float
        The bottom and the top of each cycle, >= 0.
    step_size_up : int
        Steps rising, >= 1.
    step_size_down : int, optional
        Steps falling, >= 1; default ``step_size_up``.
    mode : {"triangular", "triangular2", "exp_range"}
        ``triangular2`` halves the amplitude every cycle; ``exp_range`` scales
        it by ``gamma ** k``.
    gamma : float
        The factor of ``exp_range``, >= 0.

    Returns
    -------
    Schedule
        The cyclical learning rates.

    Examples
    --------
    >>> s = cyclic(0.1, 1.0, step_size_up=10)
    >>> s(0), s(10), s(20)
    (0.1, 1.0, 0.1)
    """
    lo, hi = _rate(base_lr, "base_lr", "cyclic"), _rate(max_lr, "max_lr", "cyclic")
    up = _count(step_size_up, "step_size_up", "cyclic")
    down = up if step_size_down is None else _count(step_size_down, "step_size_down", "cyclic")
    m = _choice(mode, "mode", "cyclic", ["triangular", "triangular2", "exp_range"])
    g = _rate(gamma, "gamma", "cyclic")
    args = dict(base_lr=lo, max_lr=hi, step_size_up=up, step_size_down=step_size_down and down, mode=mode,
                gamma=g)
    return Schedule("cyclic", args, _CYCLIC, [lo, hi, up, down, g], mode=m)


@_register
def inverse_sqrt(lr: float, warmup_steps: int, timescale: int | None = None) -> Schedule:
    """Linear warmup, then ``lr / sqrt((k + timescale - warmup_steps) / timescale)``.

    transformers' ``get_inverse_sqrt_schedule``; ``timescale`` defaults to
    ``warmup_steps`` (or 10,000 without warmup).

    Parameters
    ----------
    lr : float
        The peak, reached at the end of the warmup, >= 0.
    warmup_steps : int
        Steps of the linear warmup from 0, >= 0.
    timescale : int, optional
        See above; >= 1.

    Returns
    -------
    Schedule
        The inverse-square-root schedule.

    Examples
    --------
    >>> s = inverse_sqrt(1.0, warmup_steps=100)
    >>> s(50), s(100), s(400)
    (0.5, 1.0, 0.5)
    """
    lr = _rate(lr, "lr", "inverse_sqrt")
    w = _count(warmup_steps, "warmup_steps", "inverse_sqrt", 0)
    ts = (w or 10_000) if timescale is None else _count(timescale, "timescale", "inverse_sqrt")
    return Schedule("inverse_sqrt", dict(lr=lr, warmup_steps=w, timescale=timescale), _INVERSE_SQRT, [lr, w, ts])


@_register
def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
                  start_lr: float = 0.0) -> Schedule:
    """Linear warmup from ``start_lr`` to ``peak_lr``, then cosine to ``min_lr`` at ``total_steps``.

    transformers' ``get_cosine_schedule_with_warmup`` when ``min_lr = start_lr = 0``
    (``total_steps`` counts the warmup); holds ``min_lr`` afterwards.

    Parameters
    ----------
    peak_lr : float
        The value at the end of the warmup, >= 0.
    warmup_steps : int
        Steps of the linear warmup, >= 0.
    total_steps : int
        Warmup plus cosine, >= ``warmup_steps``.
    min_lr : float
        The final value, >= 0.
    start_lr : float
        The value at step 0, >= 0.

    Returns
    -------
    Schedule
        Warmup, then cosine.

    Examples
    --------
    >>> s = warmup_cosine(1.0, warmup_steps=10, total_steps=110)
    >>> s(5), s(10), round(s(60), 12), s(500)
    (0.5, 1.0, 0.5, 0.0)
    """
    p = _rate(peak_lr, "peak_lr", "warmup_cosine")
    w = _count(warmup_steps, "warmup_steps", "warmup_cosine", 0)
    T = _count(total_steps, "total_steps", "warmup_cosine")
    if T < w:
        raise ValueError(f"warmup_cosine: total_steps ({T}) must be >= warmup_steps ({w})")
    m, s = _rate(min_lr, "min_lr", "warmup_cosine"), _rate(start_lr, "start_lr", "warmup_cosine")
    return Schedule("warmup_cosine", dict(peak_lr=p, warmup_steps=w, total_steps=T, min_lr=m, start_lr=s),
                    _WARMUP_COSINE, [p, w, T, m, s])


@_register
def wsd(peak_lr: float, warmup_steps: int, stable_steps: int, decay_steps: int, decay: str = "linear",
        min_lr: float = 0.0) -> Schedule:
    """Warmup-stable-decay: linear warmup from 0, ``peak_lr`` for ``stable_steps``,
    then ``decay`` ("linear", "cosine" or "1-sqrt") to ``min_lr`` over ``decay_steps``.

    Parameters
    ----------
    peak_lr : float
        The plateau's value, >= 0.
    warmup_steps, stable_steps : int
        Steps of the warmup and of the plateau, >= 0.
    decay_steps : int
        Steps of the decay, >= 1.
    decay : {"linear", "cosine", "1-sqrt"}
        The decay's shape.
    min_lr : float
        The final value, >= 0.

    Returns
    -------
    Schedule
        Warmup, plateau, decay.

    Examples
    --------
    >>> s = wsd(1.0, warmup_steps=10, stable_steps=80, decay_steps=10)
    >>> s(5), s(50), s(95), s(100)
    (0.5, 1.0, 0.5, 0.0)
    """
    p = _rate(peak_lr, "peak_lr", "wsd")
    w = _count(warmup_steps, "warmup_steps", "wsd", 0)
    st = _count(stable_steps, "stable_steps", "wsd", 0)
    d = _count(decay_steps, "decay_steps", "wsd")
    mode = _choice(decay, "decay", "wsd", ["linear", "cosine", "1-sqrt"])
    m = _rate(min_lr, "min_lr", "wsd")
    return Schedule("wsd", dict(peak_lr=p, warmup_steps=w, stable_steps=st, decay_steps=d, decay=decay, min_lr=m),
                    _WSD, [p, w, st, d, m], mode=mode)


@_register
def piecewise_constant(boundaries: Iterable[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= k < boundaries[i]``.

    Parameters
    ----------
    boundaries : list of int
        Step counts at which the value changes, strictly increasing.
    values : list of float
        ``len(boundaries) + 1`` values, >= 0.

    Returns
    -------
    Schedule
        The piecewise-constant schedule.

    Examples
    --------
    >>> s = piecewise_constant([10, 20], [1.0, 0.5, 0.1])
    >>> s(9), s(10), s(20)
    (1.0, 0.5, 0.1)
    """
    b = _sorted_counts(boundaries, "boundaries", "piecewise_constant", strict=True)
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or len(values) != len(b) + 1:
        raise ValueError(f"piecewise_constant: needs len(boundaries) + 1 = {len(b) + 1} values, got {values!r}")
    v = [_rate(x, f"values[{i}]", "piecewise_constant") for i, x in enumerate(values)]
    return Schedule("piecewise_constant", dict(boundaries=b, values=v), _PIECEWISE, [len(b)], data=b + v)


@_register
def join(schedules: Sequence[Schedule], boundaries: Iterable[int]) -> Schedule:
    """``schedules[i]`` from ``boundaries[i-1]`` on, counting steps from that boundary (optax's ``join_schedules``).

    Parameters
    ----------
    schedules : list of Schedule
        ``len(boundaries) + 1`` schedules.
    boundaries : list of int
        Step counts at which the next schedule takes over, strictly increasing.

    Returns
    -------
    Schedule
        The joined schedule.

    Examples
    --------
    >>> s = join([linear(0.0, 1.0, 10), cosine(1.0, 90)], boundaries=[10])
    >>> s(5), s(10), s(100)
    (0.5, 1.0, 0.0)
    """
    if isinstance(schedules, (Schedule, str, bytes, dict)) or not hasattr(schedules, "__len__"):
        raise TypeError("join: schedules must be a list of schedules")
    schedules = _bounded_list(schedules, "schedules", "join", "schedules")
    ss = [_schedule(s, f"schedules[{i}]", "join") for i, s in enumerate(schedules)]
    b = _sorted_counts(boundaries, "boundaries", "join", strict=True)
    if len(ss) != len(b) + 1:
        raise ValueError(f"join: needs len(boundaries) + 1 = {len(b) + 1} schedules, got {len(ss)}")
    return Schedule("join", dict(schedules=ss, boundaries=b), _JOIN, [len(b)], data=b, children=ss)


@_register
def warmup(schedule: Schedule, warmup_steps: int, start_lr: float = 0.0) -> Schedule:
    """A linear ramp from ``start_lr`` to ``schedule(0)`` over ``warmup_steps``,
    then ``schedule(k - warmup_steps)``.

    Parameters
    ----------
    schedule : Schedule
        What follows the warmup.
    warmup_steps : int
        Steps of the ramp, >= 0.
    start_lr : float
        The value at step 0, >= 0.

    Returns
    -------
    Schedule
        The schedule with a warmup.

    Examples
    --------
    >>> s = warmup(constant(1.0), warmup_steps=4)
    >>> s.values(6)
    array([0.  , 0.25, 0.5 , 0.75, 1.  , 1.  ])
    """
    sch = _schedule(schedule, "schedule", "warmup")
    w = _count(warmup_steps, "warmup_steps", "warmup", 0)
    s0 = _rate(start_lr, "start_lr", "warmup")
    return Schedule("warmup", dict(schedule=sch, warmup_steps=w, start_lr=s0), _WARMUP, [w, s0], children=[sch])


@_register
def scale(schedule: Schedule, factor: float) -> Schedule:
    """``factor * schedule(k)``; also written ``factor * schedule``.

    Parameters
    ----------
    schedule : Schedule
        The schedule to scale.
    factor : float
        The factor, >= 0.

    Returns
    -------
    Schedule
        The scaled schedule (one node: scaling a scaled schedule multiplies the factors).

    Examples
    --------
    >>> (0.5 * constant(2.0))(0)
    1.0
    """
    sch = _schedule(schedule, "schedule", "scale")
    f = _rate(factor, "factor", "scale")
    if sch._name == "scale":
        # fold: a multiplicative scheduler applied every step must not nest one node per step
        return scale(sch._args["schedule"], f * sch._args["factor"])
    return Schedule("scale", dict(schedule=sch, factor=f), _SCALE, [f], children=[sch])


@_register
def plateau_scaled(schedule: Schedule, scale: float, min_lr: float = 0.0) -> Schedule:
    """``schedule`` after ReduceLROnPlateau reductions: ``max(scale * v, min(min_lr, v))``.

    Reductions never go below ``min_lr``, nor lift the schedule above itself
    where it is lower (during a warmup, say).

    Parameters
    ----------
    schedule : Schedule
        The schedule before the reductions.
    scale : float
        The product of the reductions so far, >= 0.
    min_lr : float
        The floor, >= 0.

    Returns
    -------
    Schedule
        The reduced schedule.

    Examples
    --------
    >>> s = plateau_scaled(constant(1.0), scale=0.01, min_lr=0.05)
    >>> s(0)
    0.05
    """
    sch = _schedule(schedule, "schedule", "plateau_scaled")
    f = _rate(scale, "scale", "plateau_scaled")
    m = _rate(min_lr, "min_lr", "plateau_scaled")
    return Schedule("plateau_scaled", dict(schedule=sch, scale=f, min_lr=m), _PLATEAU, [f, m], children=[sch])


# --------------------------------------------------- serialise and parse

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6
_SHORT.maxlevel = 3
_MAX_STR = 1000   # no schedule argument is a long string


def _path(parts: tuple[Any, ...]) -> str:
    return "d" + "".join(f"[{p!r}]" for p in parts)


def _check_plain(d: Any) -> None:
    """Size, depth and types of a plain-data schedule, checked without recursion before anything is built.

    Items are counted along the tree (a dict or list referenced twice counts
    twice), so shared references cannot multiply the work either.
    """
    items = 0
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(d, 1, ())]
    while stack:
        v, depth, parts = stack.pop()
        if isinstance(v, Schedule):
            items += v._size
            if depth + v._depth - 1 > MAX_DEPTH:
                raise ValueError(f"schedule dict nested too deeply: more than {MAX_DEPTH} levels (at {_path(parts)})")
            continue
        if depth > MAX_DEPTH:
            raise ValueError(f"schedule dict nested too deeply: more than {MAX_DEPTH} levels (at {_path(parts)})")
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise ValueError(f"schedule dict keys must be strings, got {_SHORT.repr(k)} in {_path(parts)}")
            entries: Iterable[tuple[Any, Any]] = v.items()
        else:
            entries = enumerate(v)
        items += 1 + len(v)
        if items > MAX_ITEMS:
            raise ValueError(f"schedule dict too large: more than {MAX_ITEMS} items (at {_path(parts)})")
        for k, x in entries:
            if type(x) in _SCALARS:         # the common case, counted above
                continue
            if isinstance(x, (dict, list, tuple, Schedule)):
                items -= 1                  # counted when popped: itself and what it holds
                stack.append((x, depth + 1, parts + (k,)))
            elif isinstance(x, str):
                if len(x) > _MAX_STR:
                    raise ValueError(f"{_path(parts + (k,))} is a string of {len(x)} characters; "
                                     f"no schedule argument is longer than {_MAX_STR}")
            elif x is not None and not isinstance(x, numbers.Number):
                raise TypeError(f"{_path(parts + (k,))} is a {type(x).__name__}; a schedule dict holds only "
                                "dicts, lists, numbers, strings, booleans and None")


_SCALARS = {int, float, bool, type(None)}


def from_dict(d: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_dict`.

    The input is checked first (at most ``MAX_ITEMS`` items, ``MAX_DEPTH``
    levels, plain data only); junk raises ``ValueError`` or ``TypeError``
    naming where in ``d`` it is.

    Parameters
    ----------
    d : dict
        ``{"type": name, **arguments}``, as :meth:`Schedule.to_dict` gives.

    Returns
    -------
    Schedule
        The schedule ``d`` describes.

    Examples
    --------
    >>> s = join([constant(1.0), cosine(1.0, 10)], [5])
    >>> from_dict(s.to_dict()) == s
    True
    """
    if not isinstance(d, dict):
        raise TypeError(f"from_dict needs a schedule dict ({{'type': <schedule name>, ...}}), "
                        f"got {type(d).__name__}")
    _check_plain(d)
    return _build(d, ())


def _build(d: Any, parts: tuple[Any, ...]) -> Schedule:
    if not is_schedule_dict(d):
        raise ValueError(f"not a schedule dict (expected {{'type': <schedule name>, ...}}) at {_path(parts)}: "
                         f"{_SHORT.repr(d)}")
    args = {}
    for k, v in d.items():
        if k == "type":
            continue
        if is_schedule_dict(v):
            v = _build(v, parts + (k,))
        elif isinstance(v, (list, tuple)) and any(isinstance(x, dict) for x in v):
            v = [_build(x, parts + (k, i)) if isinstance(x, dict) else x for i, x in enumerate(v)]
        args[k] = v
    fn = _REGISTRY[d["type"]]
    try:
        inspect.signature(fn).bind(**args)
    except TypeError as e:
        raise ValueError(f"bad schedule dict at {_path(parts)} ({d['type']}): {e}") from None
    try:
        return fn(**args)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} (at {_path(parts)})") from None


def is_schedule_dict(v: Any) -> bool:
    """True for the plain-data form of a schedule (``{"type": name, **arguments}``)."""
    return isinstance(v, dict) and isinstance(v.get("type"), str) and v["type"] in _REGISTRY


def parse(text: str) -> Schedule:
    """Build a schedule from an expression such as
    ``"warmup(cosine(3e-4, total_steps=10000), warmup_steps=500)"``.

    Only this module's schedule functions, numbers, strings, lists,
    ``None``/``True``/``False`` and multiplication or division of a schedule
    or a number by a number are allowed; nothing is evaluated by Python.  The
    expression is checked before anything is evaluated: at most
    ``PARSE_MAX_CHARS`` characters and ``PARSE_MAX_NODES`` syntax nodes,
    nested at most ``PARSE_MAX_DEPTH`` deep.  Every error is a ``ValueError``
    that gives the column (``TypeError`` if ``text`` is not a string).  The
    ``repr`` of any schedule within those bounds parses.

    Parameters
    ----------
    text : str
        The expression.

    Returns
    -------
    Schedule
        The schedule the expression builds.

    Examples
    --------
    >>> parse("0.5 * step(lr=0.1, step_size=10)")
    0.5 * step(lr=0.1, step_size=10, gamma=0.1)
    >>> parse("cosine(0.1, 0)")
    Traceback (most recent call last):
    ...
    ValueError: cosine: total_steps must be an integer >= 1, got 0 (at column 1)
    """
    if not isinstance(text, str):
        raise TypeError(f"a schedule expression must be a str, got {type(text).__name__}")
    return _Parser(text).run()


_ALLOWED_CONSTANTS = (int, float, str, bool, type(None))


class _Parser:
    """``parse``: the bounds, then a whitelist walk of the syntax tree, then the evaluation."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.src = text.strip()
        lead = text[:len(text) - len(text.lstrip())]
        self.line0, self.col0 = lead.count("\n"), len(lead) - (lead.rfind("\n") + 1)
        self.multiline = "\n" in self.src or "\r" in self.src
        self.lines = re.split(r"\r\n|\r|\n", self.src)

    def where(self, lineno: int | None = 1, col: int | None = 0, utf8: bool = True) -> str:
        """'(at column C)' for a position of the stripped source (ast gives UTF-8 byte offsets)."""
        lineno = lineno or 1
        col = col or 0
        if utf8 and 0 < lineno <= len(self.lines):
            col = len(self.lines[lineno - 1].encode("utf-8")[:col].decode("utf-8", "replace"))
        col += (self.col0 if lineno == 1 else 0) + 1
        if self.multiline or self.line0:
            return f"(at line {lineno + self.line0}, column {col})"
        return f"(at column {col})"

    def at(self, node: ast.AST) -> str:
        return self.where(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def error(self, node: ast.AST, msg: str) -> ValueError:
        return ValueError(f"{msg} {self.at(node)}")

    def segment(self, node: ast.AST) -> str:
        try:
            seg = ast.get_source_segment(self.src, node)
        except (IndexError, TypeError, ValueError):   # a position ast cannot map back: show the kind
            seg = None
        return _SHORT.repr(seg)[1:-1] if seg else type(node).__name__

    def run(self) -> Schedule:
        if len(self.text) > PARSE_MAX_CHARS:
            raise ValueError(f"schedule expression too long: {len(self.text)} characters, the limit is "
                             f"{PARSE_MAX_CHARS} (at column {PARSE_MAX_CHARS + 1})")
        if not self.src:
            raise ValueError("empty schedule expression (at column 1)")
        try:
            tree = ast.parse(self.src, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"cannot parse schedule expression: {e.msg} "
                             f"{self.where(e.lineno, (e.offset or 1) - 1, utf8=False)}") from None
        except (RecursionError, MemoryError):   # the parser's own nesting limits
            raise ValueError("cannot parse schedule expression: nested too deeply (at column 1)") from None
        except ValueError as e:                 # null bytes, on some Python versions
            raise ValueError(f"cannot parse schedule expression: {e} (at column 1)") from None
        self.check(tree.body)
        result = self.eval(tree.body)
        if not isinstance(result, Schedule):
            raise self.error(tree.body, f"{_SHORT.repr(self.src)} is not a schedule expression "
                                        f"(it gives a {type(result).__name__})")
        return result

    def check(self, root: ast.AST) -> None:
        """Whitelist, node count and depth, iteratively, before anything is evaluated."""
        count = 0
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > PARSE_MAX_NODES:
                raise self.error(node, f"schedule expression too large: more than {PARSE_MAX_NODES} elements")
            if depth > PARSE_MAX_DEPTH:
                raise self.error(node, f"schedule expression nested too deeply: more than {PARSE_MAX_DEPTH} levels")
            children = []
            if isinstance(node, ast.Constant) and type(node.value) in _ALLOWED_CONSTANTS:
                if isinstance(node.value, str) and len(node.value) > _MAX_STR:
                    raise self.error(node, f"string of {len(node.value)} characters; no schedule argument is "
                                           f"longer than {_MAX_STR}")
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
                children = [node.operand]
            elif isinstance(node, (ast.List, ast.Tuple)):
                children = node.elts
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
                children = [node.left, node.right]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id not in _REGISTRY:
                    raise self.error(node, f"unknown schedule {_SHORT.repr(node.func.id)}; "
                                           f"known: {', '.join(sorted(_REGISTRY))}")
                seen = set()
                for k in node.keywords:
                    if k.arg is None:
                        raise self.error(k, "** arguments are not allowed in a schedule expression")
                    if k.arg in seen:
                        raise self.error(k, f"keyword argument repeated: {k.arg}")
                    seen.add(k.arg)
                children = list(node.args) + [k.value for k in node.keywords]
            else:
                raise self.error(node, f"not allowed in a schedule expression: {self.segment(node)}")
            stack.extend((c, depth + 1) for c in children)

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand)
            if not _is_number(v):
                raise self.error(node, f"unary {'-' if isinstance(node.op, ast.USub) else '+'} needs a number, "
                                       f"got {type(v).__name__}")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.BinOp):
            return self.binop(node, self.eval(node.left), self.eval(node.right))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)    # what check() lets through
        fn = _REGISTRY[node.func.id]
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords if k.arg is not None}   # check(): no **
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            raise self.error(node, f"{node.func.id}: {e}") from None
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError) as e:
            raise self.error(node, str(e)) from None

    def binop(self, node: ast.BinOp, a: Any, b: Any) -> Any:
        op = "*" if isinstance(node.op, ast.Mult) else "/"
        if _is_number(a) and _is_number(b):
            if op == "/" and b == 0:
                raise self.error(node, "division by zero")
            try:
                r = a * b if op == "*" else a / b
            except OverflowError:
                r = None
            if r is None or (isinstance(r, int) and abs(r) > MAX_STEP):
                raise self.error(node, f"number too large: {self.segment(node)}")
            return r
        if isinstance(a, Schedule) and _is_number(b) or op == "*" and _is_number(a) and isinstance(b, Schedule):
            try:
                return a * b if op == "*" else a / b
            except (TypeError, ValueError) as e:
                raise self.error(node, str(e)) from None
        raise self.error(node, f"{op} {'multiplies' if op == '*' else 'divides'} a schedule or a number by a "
                               f"number, got {type(a).__name__} {op} {type(b).__name__}")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
