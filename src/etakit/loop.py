"""The training loop's other passes, for numpy: gradient clipping, weight-decay groups, Lookahead, accumulation.

What a training loop does around ``opt.step(grads)``, as standalone tools
that work with every etakit optimizer:

- :func:`clip_grad_norm_`: scale gradients by their global norm, as
  ``torch.nn.utils.clip_grad_norm_`` (``etakit.torch.clip_grad_norm_`` is the
  tensor version);
- :func:`param_groups_weight_decay`: biases and 1-D parameters in a group
  without weight decay, as timm's helper of that name;
- :class:`Lookahead`: slow weights pulled toward the fast ones every ``k``
  steps (Zhang et al. 2019), around any etakit optimizer;
- :class:`GradientAccumulator`: micro-batch gradients summed or averaged into
  buffers it owns.

These are separate passes over memory, in NumPy.  The norm is a
deterministic reduction: per tensor, float64 sums over fixed blocks in a
fixed order (:func:`etakit.reference.blocked_lane_sum`, the order of the C
engine's reductions), then tensors in order; it does not depend on the
thread count.

Examples
--------
>>> import numpy as np, etakit
>>> g = [np.array([3.0, 0.0]), np.array([4.0])]
>>> etakit.clip_grad_norm_(g, max_norm=1.0)
5.0
>>> np.round(g[0], 6), np.round(g[1], 6)
(array([0.6, 0. ]), array([0.8]))
"""
from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, Union, cast

import numpy as np
import numpy.typing as npt

from . import _core
from .optim import Optimizer
from .reference import BLOCK, LANES

__all__ = ["clip_grad_norm_", "grad_norm", "param_groups_weight_decay", "Lookahead", "GradientAccumulator"]

# what the gradient arguments take: one array, or a sequence (any iterable) of arrays
_Grads = Union[npt.NDArray[Any], Iterable[npt.NDArray[Any]]]


class _NamedParameters(Protocol):
    """A torch module, as param_groups_weight_decay takes it."""

    def named_parameters(self) -> Iterable[tuple[str, Any]]: ...


_CHUNK_BLOCKS = 256          # blocks converted to float64 at a time (1M elements, 8 MB of scratch)
NONFINITE_MESSAGE = ("The total norm of order {} for gradients from `parameters` is non-finite, so it cannot be "
                     "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
                     "`error_if_nonfinite=False`")   # torch.nn.utils.clip_grad_norm_'s words


# ---- deterministic norms ----------------------------------------------------
def _norm_type(norm_type: Any) -> float:
    if isinstance(norm_type, bool):
        raise TypeError("norm_type must be a number (2.0, 1, float('inf'), ...), got bool")
    try:
        p = float(norm_type)          # as torch: float(norm_type), so "inf" works too
    except (TypeError, ValueError):
        raise TypeError(f"norm_type must be a number (2.0, 1, float('inf'), ...), got {norm_type!r}") from None
    if math.isnan(p):
        raise ValueError("norm_type must not be NaN")
    return p


def _blocked_sum(flat: npt.NDArray[Any], p: float) -> float:
    """Sum of |x|^p (x*x for p = 2) over a 1-D array, in float64, as ``reference.blocked_lane_sum`` forms it."""
    n = flat.size
    if n == 0:
        return 0.0
    nb = -(-n // BLOCK)
    block_sums = np.empty(nb)
    scratch = np.empty(min(nb, _CHUNK_BLOCKS) * BLOCK)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for b0 in range(0, nb, _CHUNK_BLOCKS):
            lo = b0 * BLOCK
            hi = min(n, lo + _CHUNK_BLOCKS * BLOCK)
            m = hi - lo
            nbc = -(-m // BLOCK)
            w = scratch[:nbc * BLOCK]
            x = flat[lo:hi]
            if p == 2.0:
                np.multiply(x, x, out=w[:m], dtype=np.float64)   # exact for float32 and lower
            else:
                np.abs(x, out=w[:m], dtype=np.float64)
                if p != 1.0:
                    np.power(w[:m], p, out=w[:m])
            w[m:] = 0.0
            # each block: lane i % LANES adds its elements in order, the lanes are added in order
            lanes = np.add.accumulate(w.reshape(nbc, BLOCK // LANES, LANES), axis=1)[:, -1, :] + 0.0
            block_sums[b0:b0 + nbc] = np.add.accumulate(lanes, axis=1)[:, -1]
    return float(np.add.accumulate(block_sums)[-1])   # blocks in order


def _tensor_reduction(flat: npt.NDArray[Any], p: float) -> float | None:
    """The per-tensor quantity the total is formed from: a sum of |x|^p, a count (p = 0), or max/min |x|."""
    if p == 0.0:
        return float(np.count_nonzero(flat))
    if math.isinf(p):
        if flat.size == 0:
            return None
        a = np.abs(flat)
        return float(a.max() if p > 0 else a.min())    # NaN propagates, as in torch
    return _blocked_sum(flat, p)


def _combine(values: Sequence[float | None], p: float) -> float:
    """The total norm of order p from the per-tensor reductions (in tensor order)."""
    if not values:
        return 0.0
    if p == 0.0:
        # torch's total is the order-0 norm of the per-tensor norms: how many tensors have a nonzero element
        return float(sum(1 for v in values if v != 0))
    if math.isinf(p):
        vals = np.array([v for v in values if v is not None] or [0.0])
        return float(vals.max() if p > 0 else vals.min())
    total = 0.0
    for v in values:
        total += cast(float, v)     # None only for p = inf
    if p == 2.0:
        return math.sqrt(total)
    if p == 1.0:
        return total
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return float(np.power(np.float64(total), 1.0 / p))


def _total_norm(flats: Sequence[npt.NDArray[Any]], p: float, empty_error: type[Exception] | None) -> float:
    if p == 2.0 or (p == math.inf and (empty_error is None or all(f.size for f in flats))):
        # the engine's norm pass (etk_grad_norm): the same sums, formed in C across threads
        got = _core.grad_norm(list(flats), p == math.inf)
        if got is not None and (got[1] < 0 or p == 2.0):
            return got[0]
    values = []
    for i, flat in enumerate(flats):
        if flat.size == 0 and (p < 0 or (math.isinf(p) and empty_error is not None)):
            raise (empty_error or ValueError)(
                f"grads[{i}] is empty, and the norm of order {p} has no value on an empty array "
                "(the operation has no identity)")
        values.append(_tensor_reduction(flat, p))
    return _combine(values, p)


def _check_grads(grads: object, where: str = "grads") -> list[npt.NDArray[Any]]:
    if isinstance(grads, np.ndarray):
        return [grads]
    if isinstance(grads, (dict, set, str, bytes)) or not hasattr(grads, "__iter__"):
        raise TypeError(f"{where} must be a list of arrays, got {type(grads).__name__}")
    grads = list(grads)
    for i, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{where}[{i}] must be a numpy array, got {type(g).__name__}")
        if g.dtype.kind != "f":
            raise TypeError(f"{where}[{i}] has dtype {g.dtype}; expected a floating dtype (float32 or float64)")
    return grads


def grad_norm(grads: _Grads, norm_type: float = 2.0) -> float:
    """The total norm of the gradients, deterministically (what :func:`clip_grad_norm_` clips by).

    The norm of the concatenation of all arrays: per array, float64 sums of
    ``|g|**norm_type`` over fixed blocks in a fixed order
    (:func:`etakit.reference.blocked_lane_sum`), then arrays in order.
    ``norm_type=inf``: the largest ``|g|``.  Other orders follow
    ``torch.nn.utils.get_total_norm`` (order 0 counts the arrays with a
    nonzero element, as torch's norm of the per-tensor norms does).

    Parameters
    ----------
    grads : ndarray or list of ndarray
        Floating arrays of any shape and layout.
    norm_type : float, default 2.0
        The order p of the norm; ``float('inf')`` for the max norm.

    Returns
    -------
    float
        The total norm (NaN or inf when a gradient holds one).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> etakit.grad_norm([np.array([3.0]), np.array([[4.0]])])
    5.0
    >>> etakit.grad_norm([np.array([3.0, -7.0])], norm_type=float("inf"))
    7.0
    """
    p = _norm_type(norm_type)
    grads = _check_grads(grads)
    return _total_norm([g.reshape(-1) for g in grads], p, None)


def clip_grad_norm_(grads: _Grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale gradients in place so that their total norm is at most ``max_norm``; ``torch.nn.utils.clip_grad_norm_``.

    The total norm is that of all arrays together (:func:`grad_norm`); every
    array is multiplied by ``min(1, max_norm / (total_norm + 1e-6))``, as
    torch does (a NaN total makes every gradient NaN; an infinite one scales
    by 0, so its inf elements become NaN, unless ``error_if_nonfinite``).

    Parameters
    ----------
    grads : ndarray or list of ndarray
        Writable floating arrays, scaled in place.
    max_norm : float
        The largest total norm after clipping.
    norm_type : float, default 2.0
        Order of the norm; ``float('inf')`` for the max norm.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` (torch's message) when the total norm is NaN or
        inf; nothing is written then.

    Returns
    -------
    float
        The total norm before clipping.

    Raises
    ------
    TypeError
        A gradient that is not a floating numpy array.
    ValueError
        A read-only gradient, or an empty gradient with a negative order
        (whose norm has no value); nothing is written.
    RuntimeError
        ``error_if_nonfinite`` and a non-finite total norm.

    Notes
    -----
    Empty arrays contribute nothing, also with ``norm_type=inf`` (where
    ``torch.nn.utils.clip_grad_norm_`` raises; ``etakit.torch.clip_grad_norm_``
    raises as torch does).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> g = [np.full(4, 2.0), np.zeros(0)]
    >>> etakit.clip_grad_norm_(g, max_norm=1.0)
    4.0
    >>> g[0]                                        # scaled by 1 / (4 + 1e-6)
    array([0.49999988, 0.49999988, 0.49999988, 0.49999988])
    >>> g2 = [np.ones(2)]
    >>> etakit.clip_grad_norm_(g2, max_norm=10.0), g2[0]    # below max_norm: unchanged
    (1.4142135623730951, array([1., 1.]))
    """
    p = _norm_type(norm_type)
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        try:
            max_norm = float(max_norm)     # a 0-d array or tensor, as torch takes
        except (TypeError, ValueError):
            raise TypeError(f"max_norm must be a real number, got {type(max_norm).__name__} {max_norm!r}") from None
    max_norm = float(max_norm)
    grads = _check_grads(grads)
    for i, g in enumerate(grads):
        if not g.flags.writeable:
            raise ValueError(f"grads[{i}] is read-only; clip_grad_norm_ scales the gradients in place")
    total = _total_norm([g.reshape(-1) for g in grads], p, None)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(NONFINITE_MESSAGE.format(p))
    if not grads:
        return total
    coef = max_norm / (total + 1e-6)
    if coef > 1.0:
        coef = 1.0
    if coef != 1.0:                     # x * 1.0 is x: skip the pass (NaN coef: every gradient becomes NaN)
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            for g in grads:
                np.multiply(g, coef, out=g)
    return total


# ---- weight-decay groups ------------------------------------------------------
def param_groups_weight_decay(named_params: Iterable[tuple[str, Any]] | Mapping[str, Any] | _NamedParameters,
                              weight_decay: float = 1e-5, no_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on the weights only; timm's ``param_groups_weight_decay``.

    A parameter goes to the group with ``weight_decay=0`` when it has at most
    one dimension (biases, norm scales), its name ends in ``".bias"``, or its
    name matches a pattern of ``no_decay`` (an exact name, or an
    ``fnmatch`` wildcard such as ``"pos_*"``, as timm matches them); every
    other one to the group with
    ``weight_decay``.  Torch parameters with ``requires_grad=False`` are
    left out, as timm does.  Order within each group is the input order.

    Parameters
    ----------
    named_params : iterable of (str, array) pairs, or a torch module
        numpy ``(name, array)`` pairs, ``model.named_parameters()``, or a
        module (its ``named_parameters()`` is used).
    weight_decay : float, default 1e-5
        The weight decay of the decayed group (timm's default).
    no_decay : iterable of str, default ()
        Names or wildcard patterns that never decay (timm's
        ``no_weight_decay_list``).

    Returns
    -------
    list of dict
        ``[{"params": no_decay_params, "weight_decay": 0.0}, {"params": decay_params,
        "weight_decay": weight_decay}]``, timm's order; a group with no
        parameters is left out (etakit optimizers refuse an empty group), so
        the list is usable as it is by every etakit optimizer and
        ``etakit.torch`` drop-in.  No parameter at all (a consumed generator,
        a frozen model, a ``state_dict()``) raises ValueError.

    Notes
    -----
    A numpy optimizer takes its gradients in group order (the no-decay
    group first), not in the order of ``named_params``:
    ``params = [p for g in groups for p in g["params"]]`` is that order.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> named = [("fc.weight", np.zeros((3, 2))), ("fc.bias", np.zeros(3)), ("scale", np.ones(2))]
    >>> groups = etakit.param_groups_weight_decay(named, weight_decay=0.05)
    >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
    [(2, 0.0), (1, 0.05)]
    >>> opt = etakit.AdamW(groups, lr=1e-3)
    """
    if isinstance(no_decay, str):
        raise TypeError("no_decay must be a collection of names, got a str (wrap it in a list)")
    skip = list(no_decay)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
        raise TypeError(f"weight_decay must be a real number, got {type(weight_decay).__name__}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if hasattr(named_params, "named_parameters") and callable(named_params.named_parameters):
        named_params = named_params.named_parameters()
    if isinstance(named_params, dict):
        named_params = named_params.items()
    decay, no = [], []
    for i, item in enumerate(named_params):
        try:
            name, param = item
        except (TypeError, ValueError):
            raise TypeError(f"named_params[{i}] must be a (name, parameter) pair, got {type(item).__name__}") \
                from None
        if not isinstance(name, str):
            raise TypeError(f"named_params[{i}]: the name must be a str, got {type(name).__name__}")
        if getattr(param, "requires_grad", True) is False:
            continue
        if not hasattr(param, "ndim"):
            raise TypeError(f"named_params[{i}] ({name!r}) must be an array or tensor, got {type(param).__name__}")
        if param.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatchcase(name, pat) for pat in skip):
            no.append(param)
        else:
            decay.append(param)
    if not no and not decay:
        raise ValueError("named_params holds no parameter that takes gradients (an exhausted generator, a frozen "
                         "model, or tensors with requires_grad=False such as a state_dict()?)")
    groups = [{"params": no, "weight_decay": 0.0}, {"params": decay, "weight_decay": float(weight_decay)}]
    return [g for g in groups if g["params"]]


# ---- Lookahead ----------------------------------------------------------------
def _check_k_alpha(k: Any, alpha: Any) -> tuple[int, float]:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (the fast steps between slow-weight updates), got {k}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    if not 0.0 <= alpha <= 1.0:  # type: ignore[operator]  # typeshed's numbers.Real has no __ge__
        raise ValueError(f"alpha must be in [0, 1] (the slow weights' step toward the fast ones), got {alpha}")
    return int(k), float(alpha)


def _lookahead_sync(p: npt.NDArray[np.floating[Any]], slow: npt.NDArray[np.floating[Any]], alpha: float) -> None:
    """p <- lerp(p, slow, 1 - alpha) (torch's lerp formula, in p's dtype), then slow <- p."""
    T = p.dtype.type
    w = T(1.0 - alpha)
    d = slow - p
    if abs(w) < 0.5:
        d *= w
        p += d
    else:
        d *= T(1.0) - w
        np.subtract(slow, d, out=p)
    slow[...] = p


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any etakit optimizer: slow weights that follow the fast ones.

    Each :meth:`step` runs the wrapped optimizer (the fast weights); every
    ``k`` steps of a group, its slow weights move toward the fast ones,
    ``slow += alpha * (fast - slow)``, and the fast weights restart from them
    (``fast = slow``).  The slow weights start as copies of the parameters.
    This is pytorch_optimizer's ``Lookahead`` (``pullback_momentum="none"``),
    with its lerp formula; torch's vectorised lerp rounds its multiply-add
    once, numpy twice, so the two can differ by an ulp at each
    synchronisation (trajectories agree to about 1e-14 in float64).

    Parameters
    ----------
    optimizer : etakit.Optimizer
        The inner (fast) optimizer.
    k : int, default 5
        Fast steps between slow-weight updates, >= 1.
    alpha : float, default 0.5
        Step of the slow weights toward the fast ones, in [0, 1].

    Attributes
    ----------
    optimizer : etakit.Optimizer
    param_groups : list of dict
        The inner optimizer's groups (change ``lr`` there or here: the same dicts).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(2)
    >>> opt = etakit.Lookahead(etakit.SGD([w], lr=0.1), k=2, alpha=0.5)
    >>> opt.step([np.ones(2)]); w          # a fast step
    array([-0.1, -0.1])
    >>> opt.step([np.ones(2)]); w          # second fast step, then halfway back to the slow weights
    array([-0.1, -0.1])
    >>> sd = opt.state_dict(); sorted(sd["lookahead"])
    ['alpha', 'counters', 'k', 'slow']
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an etakit optimizer (etakit.Optimizer), got {type(optimizer).__name__}"
                            "; for torch optimizers use etakit.torch.Lookahead")
        self.k, self.alpha = _check_k_alpha(k, alpha)
        self.optimizer = optimizer
        self._slow = [p.copy() for p in self._params()]
        self._counters = [0] * len(optimizer.param_groups)

    def _params(self) -> list[npt.NDArray[Any]]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups (the same dicts: a change here is a change there).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> la = etakit.Lookahead(etakit.SGD([np.zeros(2)], lr=0.1))
        >>> la.param_groups[0]["lr"] = 0.01; la.optimizer.param_groups[0]["lr"]
        0.01
        """
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        """Completed steps of the inner optimizer.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> la = etakit.Lookahead(etakit.SGD([np.zeros(2)], lr=0.1))
        >>> la.step([np.ones(2)]); la.step_count
        1
        """
        return self.optimizer.step_count

    def step(self, grads: Sequence[npt.NDArray[Any]] | None = None, **kwargs: Any) -> None:
        """One step of the inner optimizer, then the slow-weight update of each group at its k-th step.

        Parameters
        ----------
        grads : list of ndarray, optional
            As for the inner optimizer's ``step`` (None: its accumulated
            gradients).  If that step raises, or skips for a non-finite
            gradient, nothing here changes either.
        **kwargs
            The inner optimizer's other ``step`` arguments (``grad_scale``).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.ones(1)
        >>> la = etakit.Lookahead(etakit.SGD([w], lr=1.0), k=1, alpha=0.25)
        >>> la.step([np.ones(1)]); w     # fast to 0, slow 1 + 0.25 * (0 - 1)
        array([0.75])
        """
        skipped = getattr(self.optimizer, "skipped_steps", 0)
        self.optimizer.step(grads, **kwargs)
        if getattr(self.optimizer, "skipped_steps", 0) != skipped:
            return              # the inner step was skipped: no step to count
        i = 0
        for gi, group in enumerate(self.param_groups):
            n = len(group["params"])
            self._counters[gi] += 1
            if self._counters[gi] >= self.k:
                self._counters[gi] = 0
                for p, slow in zip(group["params"], self._slow[i:i + n]):
                    _lookahead_sync(p, slow, self.alpha)
            i += n

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its slow weights start as copies, its counter at 0.

        Parameters
        ----------
        param_group : dict
            ``{"params": [...], **hyperparameters}``, as the inner
            optimizer's ``add_param_group`` takes it.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> la = etakit.Lookahead(etakit.SGD([np.zeros(2)]))
        >>> la.add_param_group({"params": [np.zeros(3)], "lr": 0.1})
        >>> len(la.param_groups)
        2
        """
        self.optimizer.add_param_group(param_group)
        self._slow += [p.copy() for p in self.param_groups[-1]["params"]]
        self._counters.append(0)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus the slow weights and counters (copies).

        ``etakit.save`` writes it.

        Returns
        -------
        dict
            ``{"optimizer": inner state dict, "lookahead": {"k", "alpha",
            "counters": [per group], "slow": {index: ndarray}}}``, parameters
            numbered as in the inner state dict.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> la = etakit.Lookahead(etakit.Adam([np.zeros(2)]), k=3)
        >>> la.step([np.ones(2)])
        >>> la.state_dict()["lookahead"]["counters"]
        [1]
        """
        return {"optimizer": self.optimizer.state_dict(),
                "lookahead": {"k": self.k, "alpha": self.alpha, "counters": list(self._counters),
                              "slow": {i: s.copy() for i, s in enumerate(self._slow)}}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; everything is checked before anything changes.

        ``k`` and ``alpha`` stay those given to the constructor.

        Parameters
        ----------
        state_dict : dict
            A Lookahead :meth:`state_dict` of the same parameters.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> la = etakit.Lookahead(etakit.Adam([np.zeros(2)]), k=3)
        >>> la.step([np.ones(2)])
        >>> la2 = etakit.Lookahead(etakit.Adam([np.zeros(2)]), k=3)
        >>> la2.load_state_dict(la.state_dict()); la2.state_dict()["lookahead"]["counters"]
        [1]
        """
        if not isinstance(state_dict, dict) or "optimizer" not in state_dict or "lookahead" not in state_dict:
            raise ValueError("state_dict must be a Lookahead state dict: {'optimizer': ..., 'lookahead': ...}")
        la = state_dict["lookahead"]
        if not isinstance(la, dict) or "counters" not in la or "slow" not in la:
            raise ValueError("state_dict['lookahead'] must have 'counters' and 'slow'")
        counters = list(la["counters"])
        if len(counters) != len(self.param_groups):
            raise ValueError(f"state_dict['lookahead']['counters'] has {len(counters)} entries; "
                             f"the optimizer has {len(self.param_groups)} parameter groups")
        for gi, c in enumerate(counters):
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
                raise ValueError(f"state_dict['lookahead']['counters'][{gi}] must be an int >= 0, got {c!r}")
        slow = dict(la["slow"]) if isinstance(la["slow"], dict) else la["slow"]     # (a copy: views replace voids)
        params = self._params()
        if not isinstance(slow, dict) or sorted(slow) != list(range(len(params))):
            raise ValueError(f"state_dict['lookahead']['slow'] must map 0..{len(params) - 1} to arrays "
                             "(one per parameter)")
        for i, p in enumerate(params):
            s = slow[i]
            if isinstance(s, np.ndarray) and s.dtype.kind == "V" and s.dtype.itemsize == 2 and \
                    p.dtype.name == "bfloat16":
                s = slow[i] = s.view(p.dtype)       # bfloat16 saved by numpy (etakit.save) comes back as voids
            if not isinstance(s, np.ndarray) or s.shape != p.shape or s.dtype != p.dtype:
                got = f"{s.dtype} {s.shape}" if isinstance(s, np.ndarray) else type(s).__name__
                raise ValueError(f"state_dict['lookahead']['slow'][{i}]: expected {p.dtype} {p.shape}, got {got}")
        self.optimizer.load_state_dict(state_dict["optimizer"])   # checks everything before it changes anything
        self._slow = [np.array(slow[i], copy=True, order="C") for i in range(len(params))]
        self._counters = [int(c) for c in counters]

    def __getattr__(self, name: str) -> Any:
        # the inner optimizer's other public attributes (current_lr, train/eval, ...)
        if name.startswith("_") or "optimizer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["optimizer"], name)

    def __repr__(self) -> str:
        return f"Lookahead({self.optimizer!r}, k={self.k}, alpha={self.alpha})"


# ---- gradient accumulation ---------------------------------------------------
class GradientAccumulator:
    """Buffers that sum or average micro-batch gradients, to hand to ``opt.step``.

    ``add(grads)`` adds into buffers this object owns (in place, no
    temporaries); ``grads()`` returns those very buffers, divided in place by
    the number of ``add`` calls when ``mode="mean"``, so that clipping or
    scaling them in place (``etakit.clip_grad_norm_(acc.grads(), 1.0)``)
    is what a later ``acc.grads()`` returns; ``zero()`` starts over.  An
    ``add`` after ``grads()`` and before ``zero()`` is refused.

    Parameters
    ----------
    params_like : list of ndarray
        The parameters (or anything of their shapes and dtypes): one
        C-contiguous float32 or float64 buffer is made per array.
    mode : {"mean", "sum"}, default "mean"
        ``"mean"``: the average of the added gradients (the gradient of the
        mean loss over all micro-batches when each is a micro-batch mean);
        ``"sum"``: their sum.

    Attributes
    ----------
    count : int
        ``add`` calls since the last ``zero``.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(2)
    >>> acc = etakit.GradientAccumulator([w])
    >>> acc.add([np.array([1.0, 2.0])]); acc.add([np.array([3.0, 4.0])])
    >>> acc.grads()
    [array([2., 3.])]
    >>> opt = etakit.SGD([w], lr=1.0); opt.step(acc.grads()); acc.zero(); w
    array([-2., -3.])
    """

    def __init__(self, params_like: Sequence[npt.NDArray[Any]], mode: str = "mean") -> None:
        if mode not in ("mean", "sum"):
            raise ValueError(f"mode must be 'mean' or 'sum', got {mode!r}")
        arrays = _check_grads(params_like, "params_like")
        for i, a in enumerate(arrays):
            if a.dtype not in (np.float32, np.float64):
                raise TypeError(f"params_like[{i}] has dtype {a.dtype}; expected float32 or float64")
        self.mode = mode
        self._buf = [np.zeros(a.shape, dtype=a.dtype) for a in arrays]
        self._final = False      # grads() handed the buffers out (averaged): add needs zero() first
        self.count = 0

    def add(self, grads: Sequence[npt.NDArray[Any]]) -> None:
        """Add one micro-batch's gradients (checked first: dtype and shape per buffer; nothing added on error).

        Parameters
        ----------
        grads : list of ndarray
            One gradient per buffer, of its shape and dtype.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> acc = etakit.GradientAccumulator([np.zeros(1)], mode="sum")
        >>> acc.add([np.ones(1)]); acc.add([np.ones(1)]); acc.grads(), acc.count
        ([array([2.])], 2)
        """
        if self._final:
            raise ValueError("grads() has handed out the accumulated gradients (and averaged them in mean mode); "
                             "call zero() before adding the next micro-batch")
        grads = _check_grads(grads)
        if len(grads) != len(self._buf):
            raise ValueError(f"grads has {len(grads)} arrays; the accumulator has {len(self._buf)}")
        for i, (g, b) in enumerate(zip(grads, self._buf)):
            if g.shape != b.shape or g.dtype != b.dtype:
                raise ValueError(f"grads[{i}]: expected {b.dtype} {b.shape}, got {g.dtype} {g.shape}")
        for g, b in zip(grads, self._buf):
            np.add(b, g, out=b)
        self.count += 1

    def grads(self) -> list[npt.NDArray[Any]]:
        """The accumulated gradients: the buffers themselves, every call the same arrays.

        In ``"mean"`` mode the first call after the ``add`` calls divides them
        in place by ``count``; changes made to them (an in-place clip) stay
        until ``zero()``.  Without any ``add``, zeros.

        Returns
        -------
        list of ndarray
            The accumulator's own buffers (not copies), one per parameter.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> etakit.GradientAccumulator([np.zeros(2, dtype=np.float32)]).grads()
        [array([0., 0.], dtype=float32)]
        """
        if not self._final and self.mode == "mean" and self.count > 1:
            for b in self._buf:
                np.divide(b, b.dtype.type(self.count), out=b)
        self._final = True
        return list(self._buf)

    def zero(self) -> None:
        """Set the buffers to zero and the count to 0.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> acc = etakit.GradientAccumulator([np.zeros(1)]); acc.add([np.ones(1)]); acc.zero(); acc.count
        0
        """
        for b in self._buf:
            b.fill(0)
        self.count = 0
        self._final = False
