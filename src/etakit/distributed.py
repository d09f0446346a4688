"""Optimizer state sharded across MPI ranks (ZeRO stage 1), for data-parallel numpy training.

In data-parallel training every rank holds the whole model and computes
gradients on its own batch; the optimizer state (two buffers the size of the
model for Adam) is then the largest thing each rank keeps, and every rank
would make the same update.  :class:`ShardedOptimizer` splits the update
instead: the parameters are laid out as one flat vector, cut into one
contiguous shard per rank, and per step

1. one ``Reduce_scatter`` sums the gradients over the ranks and hands each
   rank its shard of the sum, which it divides by the rank count (the mean);
2. each rank steps only its shard, with the fused C kernel of an ordinary
   etakit optimizer built over views of the shard, and keeps state for it only;
3. one ``Allgatherv`` (the all-gather of the shards, of unequal sizes) puts
   the updated parameters back together on every rank.

Each rank sends about ``(R - 1) / R`` of the gradients and of the parameters
per step (what an all-reduce alone would send), and keeps ``1 / R`` of the
state.  mpi4py (and an MPI library) is imported by this module only:
``pip install "etakit[mpi]"`` installs both from the package index.

How a rule is sharded follows from what its update reads:

- element-wise rules (SGD, the Adam family, RMSprop, Lion, ...: one C phase
  without reductions, as the C rule table says; and the schedule-free rules,
  whose per-group scalars depend on the step count and learning rate only)
  are cut anywhere inside a tensor, at multiples of 4096 elements from the
  tensor's start (the blocks of etakit's deterministic norms, see below);
- rules that reduce over each tensor (LAMB's and LARS's trust ratios,
  Adafactor's factored moments, Muon's orthogonalisation, LDoG, Adan) get
  whole tensors: the shards are cut at tensor boundaries, so one large tensor
  can unbalance them;
- rules that reduce over every tensor of a group (Prodigy, D-Adaptation, DoG
  without ``layer_wise``) and the options that reduce over all tensors
  (LAMB's ``pre_norm``, Adan's ``max_grad_norm``) are refused: their step is
  not separable; use ``global_clipnorm`` here, which clips by the global norm.

Global-norm clipping (``global_clipnorm``) and the non-finite policy
(``nonfinite``) see the norm of all the averaged gradients: each rank forms
the float64 sums of its 4096-element blocks, one ``Allgatherv`` gives every
rank all of them, and every rank adds them in the same fixed order, the order
of :func:`etakit.clip_grad_norm_`.  The norm is therefore the same on every
rank, whatever the rank count, and bit-identical to the single-process
``etakit.clip_grad_norm_`` of the averaged gradients; the clip coefficient
scales each rank's own shard.

Examples
--------
Run with ``mpiexec -n 2 python train.py``::

    import numpy as np, etakit
    from mpi4py import MPI
    from etakit.distributed import ShardedOptimizer

    flat = np.zeros(10 * 3 + 3)                  # parameters as views of one array: no copies
    W, b = flat[:30].reshape(10, 3), flat[30:]
    opt = ShardedOptimizer(etakit.AdamW([W, b], lr=1e-3), MPI.COMM_WORLD, global_clipnorm=1.0)
    for step in range(100):
        gW, gb = ...                             # this rank's gradients
        opt.step([gW, gb])                       # every rank calls step
"""
from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

try:
    from mpi4py import MPI
except ImportError as e:       # pragma: no cover (the extra is installed where this runs)
    raise ImportError("etakit.distributed needs mpi4py and an MPI library: pip install 'etakit[mpi]' "
                      f"(which installs mpi4py and mpich) ({e})") from None

from . import _core, _lowp
from . import optim as _optim
from ._step import RuleSpec
from .errors import GradientError, GradientTypeError, StateError
from .loop import _combine, _norm_type
from .reference import BLOCK, LANES

__all__ = ["ShardedOptimizer", "partition"]

_NONFINITE = ("ignore", "skip", "raise")
_MPI_TYPES = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}


# ---- how a rule is sharded -----------------------------------------------------
def sharding(opt_cls: type[_optim.Optimizer], groups: Sequence[dict[str, Any]]) -> str:
    """``"elements"`` or ``"tensors"``: how ``opt_cls`` with these groups may be sharded (see the
    module docstring); ValueError for a rule or option whose step reduces over every tensor."""
    name = opt_cls.__name__
    spec = RuleSpec.of(opt_cls)
    for gi, g in enumerate(groups):
        if name == "LAMB" and g.get("pre_norm"):
            raise ValueError(f"ShardedOptimizer: LAMB with pre_norm=True (param_groups[{gi}]) clips by the norm of "
                             "every tensor together, which no shard sees; use ShardedOptimizer(..., "
                             "global_clipnorm=...) to clip by the global norm")
        if name == "Adan" and (g.get("max_grad_norm") or 0.0) > 0:
            raise ValueError(f"ShardedOptimizer: Adan with max_grad_norm > 0 (param_groups[{gi}]) clips by the norm "
                             "of every tensor together, which no shard sees; use ShardedOptimizer(..., "
                             "global_clipnorm=...) to clip by the global norm")
    if issubclass(opt_cls, _optim._ScheduleFree):
        return "elements"      # per-group scalars from the step count and lr only: the same on every rank
    if spec.group_state:
        if issubclass(opt_cls, _optim.DoG) and all(g.get("layer_wise") for g in groups):
            return "tensors"   # LDoG: the distances and norms of each tensor
        raise ValueError(f"ShardedOptimizer cannot shard {name}: its step size is formed from sums over every "
                         "tensor of a group, which no shard sees (element-wise rules such as AdamW, and rules "
                         "with per-tensor norms such as LAMB, LARS, Adafactor, Muon or LDoG, can be sharded)")
    # C: "one element-wise phase without reductions" (what low-precision state needs too)
    return "elements" if spec.lowp else "tensors"


def partition(sizes: Sequence[int], nranks: int, whole_tensors: bool = False) -> list[int]:
    """Shard boundaries in the flat vector of tensors of ``sizes``: ``nranks + 1`` offsets.

    Shard ``r`` is ``[bounds[r], bounds[r + 1])``, as near ``r * n / nranks``
    as allowed: at a tensor boundary, or, unless ``whole_tensors``, at a
    multiple of 4096 elements from a tensor's start (so each rank's blocks are
    those of the deterministic norm).  Shards may be empty.

    Parameters
    ----------
    sizes : sequence of int
        The element counts of the tensors, in order.
    nranks : int
        The number of shards (ranks), >= 1.
    whole_tensors : bool, default False
        Cut at tensor boundaries only (for rules that reduce over each tensor).

    Returns
    -------
    list of int
        The ``nranks + 1`` shard boundaries, from 0 to ``sum(sizes)``,
        non-decreasing.

    Examples
    --------
    >>> from etakit.distributed import partition
    >>> partition([10000, 3000], 2)
    [0, 8192, 13000]
    >>> partition([10000, 3000], 2, whole_tensors=True)
    [0, 10000, 13000]
    """
    offsets = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)
    n = int(offsets[-1])
    bounds = [0]
    for r in range(1, nranks):
        ideal = (r * n) // nranks
        i = min(max(int(np.searchsorted(offsets, ideal, side="right")) - 1, 0), len(sizes) - 1) if sizes else 0
        start, end = (int(offsets[i]), int(offsets[i + 1])) if sizes else (0, 0)
        if whole_tensors:
            cut = start if ideal - start <= end - ideal else end
        else:
            cut = min(start + (ideal - start + BLOCK // 2) // BLOCK * BLOCK, end)
        bounds.append(max(cut, bounds[-1]))
    bounds.append(n)
    return bounds


def _block_sums(flat: npt.NDArray[Any], p: float) -> npt.NDArray[np.float64]:
    """The float64 sums of ``|x|**p`` over each 4096-element block of a 1-D array (the last one
    partial), formed as :func:`etakit.grad_norm` forms them (``reference.blocked_lane_sum``: lane
    ``i % 16`` adds its elements in order, then the lanes in order), so that adding a tensor's
    block sums in order gives its ``grad_norm`` sum bit for bit.  Row by row: the float64 values
    are never all in memory at once."""
    if p == 2.0:
        fast = _core.grad_block_sums(flat)      # the engine's norm pass, the same sums
        if fast is not None:
            return fast
    rows = BLOCK // LANES
    n = flat.size
    full = n // BLOCK
    out = np.empty(-(-n // BLOCK))

    def sums(x3: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        acc = np.zeros((x3.shape[0], LANES))
        t = np.empty_like(acc)
        for j in range(rows):           # each lane adds its next element
            r = x3[:, j, :]
            if p == 2.0:
                np.multiply(r, r, out=t, dtype=np.float64)      # exact for float32
            else:
                np.abs(r, out=t, dtype=np.float64)
                if p != 1.0:
                    np.power(t, p, out=t)
            np.add(acc, t, out=acc)
        s = acc[:, 0].copy()
        for lane in range(1, LANES):    # the lanes in order
            s += acc[:, lane]
        return s

    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for b0 in range(0, full, 2048):
            k = min(2048, full - b0)
            out[b0:b0 + k] = sums(flat[b0 * BLOCK:(b0 + k) * BLOCK].reshape(k, rows, LANES))
        if out.size > full:
            tail = np.zeros(BLOCK, dtype=flat.dtype)
            tail[:n - full * BLOCK] = flat[full * BLOCK:]
            out[full] = sums(tail.reshape(1, rows, LANES))[0]
    return out


def _flat_of(arrays: Sequence[npt.NDArray[Any]], n: int, dtype: np.dtype[Any]) -> npt.NDArray[Any] | None:
    """The 1-D array of ``n`` elements whose consecutive slices ``arrays`` are (C-contiguous, in
    order, of ``dtype``), or None: then the step reads or writes them through a copy."""
    if not arrays:
        return None
    item = dtype.itemsize
    base, off = None, 0
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            return None
        if a.size:
            ptr = a.__array_interface__["data"][0]
            if base is None:
                base, first = ptr - off * item, a
            elif ptr != base + off * item:
                return None
        off += a.size
    if base is None:
        return None
    root = first
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.dtype != dtype or not root.flags.c_contiguous:
        return None
    start = base - root.__array_interface__["data"][0]
    if start < 0 or start % item or start // item + n > root.size:
        return None
    return root.reshape(-1)[start // item:start // item + n]


def _option(name: str, doc: str) -> property:
    """A loop option of ShardedOptimizer: its own value when set, else the wrapped optimizer's."""
    def get(self: ShardedOptimizer) -> Any:
        v = self._options.get(name, _MISSING)
        if v is _MISSING:
            v = getattr(self.optimizer._loop, name)
        if name == "nonfinite" and v is None:       # the default policy: raise when clipping, as etakit's
            v = "raise" if self.global_clipnorm is not None else "ignore"
        return v

    def set_(self: ShardedOptimizer, v: Any) -> None:
        if v is None and name != "global_clipnorm":
            self._options.pop(name, None)           # None: the wrapped optimizer's again
        else:
            self._options[name] = _CHECK[name](v)   # checked before it is kept

    def del_(self: ShardedOptimizer) -> None:
        self._options.pop(name, None)

    return property(get, set_, del_, doc)


class ShardedOptimizer:
    """An etakit optimizer whose state and update are split across the ranks of an MPI communicator.

    ZeRO stage 1 for numpy: gradients are averaged over the ranks with one
    ``Reduce_scatter``, each rank updates its shard of the parameters with the
    fused kernel and keeps the optimizer state of that shard only, and one
    ``Allgatherv`` gives every rank the updated parameters (see the module
    docstring for how rules are sharded).  Every rank builds the same
    optimizer over its copy of the parameters, wraps it, and calls
    :meth:`step` with its own gradients; afterwards every rank's parameters
    are those of one optimizer stepped on the mean of the gradients,
    bit-identically.

    Parameters
    ----------
    optimizer : etakit.Optimizer
        A new optimizer (not stepped yet) over the whole model, the same on
        every rank.  Its ``param_groups`` stay the place to change
        hyperparameters (``opt.param_groups[0]["lr"] = ...``); step the
        ShardedOptimizer, not it.  All parameters must have one dtype.
        Parameters that are consecutive views of one array (in group order)
        are updated in place by the all-gather; others through a copy.
    comm : mpi4py.MPI.Intracomm
        The ranks that share the work, e.g. ``MPI.COMM_WORLD``.
    global_clipnorm : float or None, default None
        Clip the averaged gradients by their global norm, as
        ``etakit.clip_grad_norm_(grads, global_clipnorm, norm_type)``.
        None: the wrapped optimizer's ``global_clipnorm``, read at each step
        (its clipping is done here, by the norm over every rank, never by a
        shard's).  Each of these three is also an attribute, checked when
        set: set on the ShardedOptimizer it overrides the wrapped
        optimizer's; ``del opt.global_clipnorm`` follows it again.
    norm_type : float, optional
        The order of that norm: > 0, or ``float('inf')`` (default: the
        optimizer's, 2.0 unless set, read at each step).
    nonfinite : {"ignore", "skip", "raise"}, optional
        Default: the optimizer's policy, read at each step ("raise" with
        clipping, else "ignore", unless it sets one).
        What a non-finite global gradient norm does: "ignore" steps anyway
        (as ``torch.optim``); "skip" leaves parameters, state and step count
        as they were on every rank (counted in ``skipped_steps``); "raise"
        raises :class:`etakit.GradientError` on every rank, naming the first
        non-finite gradient, before anything is written.

    Attributes
    ----------
    rank, size : int
        This rank and the rank count.
    bounds : list of int
        The shards: rank ``r`` owns elements ``[bounds[r], bounds[r + 1])`` of
        the flat parameter vector.
    last_grad_norm : float or None
        The global norm of the last step's averaged gradients (before
        clipping), when ``global_clipnorm`` or ``nonfinite`` needs it.
    skipped_steps : int
        Steps skipped by ``nonfinite="skip"``.

    Notes
    -----
    Every rank must call :meth:`step` (and :meth:`consolidated_state_dict`,
    ``train``, ``eval``) in the same order, as with any MPI collective; a
    rank that raises on a bad argument leaves the others waiting.  The
    constructor is a collective too (one allgather): every rank raises a
    ValueError when the ranks wrap optimizers of different rules, dtypes,
    shapes, groups or loop options, or when one rank's arguments are refused.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> from mpi4py import MPI
    >>> from etakit.distributed import ShardedOptimizer
    >>> w = np.zeros(3)
    >>> opt = ShardedOptimizer(etakit.AdamW([w], lr=0.1), MPI.COMM_SELF, global_clipnorm=1.0)
    >>> opt.step([np.array([3.0, 4.0, 0.0])])
    >>> opt.last_grad_norm, w.round(3)
    (5.0, array([-0.1, -0.1,  0. ]))
    """

    def __init__(self, optimizer: _optim.Optimizer, comm: MPI.Intracomm, *, global_clipnorm: float | None = None,
                 norm_type: float | None = None, nonfinite: str | None = None) -> None:
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD, ...), got "
                            f"{type(comm).__name__}")
        # every rank checks its own arguments, then one allgather compares what the collectives rely on:
        # ranks that wrapped different models would otherwise abort in MPI (truncated messages), hang, or
        # silently mix shards of different models; a rank whose own checks failed is named on the others
        try:
            self._build(optimizer, comm, global_clipnorm, norm_type, nonfinite)
            mine, error = self._fingerprint(), None
        except Exception as e:
            mine, error = {"error": f"{type(e).__name__}: {e}"}, e
        everyone = comm.allgather(mine)
        if error is not None:
            raise error
        for r, theirs in enumerate(everyone):
            if "error" in theirs:
                raise ValueError(f"ShardedOptimizer: rank {r} of {len(everyone)} could not wrap its optimizer "
                                 f"({theirs['error']}); every rank must wrap the same optimizer of the same model")
        for key in mine:
            values = [theirs.get(key) for theirs in everyone]
            if any(v != values[0] for v in values):
                shown = "; ".join(f"rank {r}: {_one_line(v)}" for r, v in enumerate(values))
                raise ValueError(f"ShardedOptimizer: the ranks wrap different optimizers (they differ in {key}: "
                                 f"{shown}); every rank must wrap the same optimizer of the same model")

    def _fingerprint(self) -> dict[str, Any]:
        """What must be the same on every rank (the layout of the collectives, the rule and its options)."""
        return {"rule": type(self.optimizer).__name__, "dtype": str(self._dtype),
                "shapes": [tuple(s) for s in self._shapes],
                "group sizes": [len(g["params"]) for g in self.optimizer.param_groups], "sharding": self.mode,
                "loop options": (self.global_clipnorm, self.norm_type, self.nonfinite)}

    def _build(self, optimizer: _optim.Optimizer, comm: MPI.Intracomm, global_clipnorm: float | None,
               norm_type: float | None, nonfinite: str | None) -> None:
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"optimizer must be an etakit optimizer (etakit.AdamW, ...), got "
                            f"{type(optimizer).__name__}")
        if optimizer.step_count or any(optimizer._state) or any(optimizer._steps):
            raise ValueError("optimizer has stepped already; wrap a new optimizer (to continue a run, load its "
                             "state_dict into the ShardedOptimizer)")
        # the wrapped optimizer's own loop options (etakit._passes) become the sharded step's: its
        # shards' optimizer must not clip by a shard's norm
        loop = optimizer._loop
        if loop.ema_decay is not None:
            raise ValueError("ShardedOptimizer: the optimizer has ema_decay set; an EMA of the parameters is not "
                             "sharded (keep one of the gathered parameters on the rank that evaluates)")
        # given here, they override the wrapped optimizer's options; not given, they follow them (read
        # at each step), so that `optimizer.global_clipnorm = ...` after wrapping takes effect
        self._options: dict[str, Any] = {}
        for name, v in (("global_clipnorm", global_clipnorm), ("norm_type", norm_type), ("nonfinite", nonfinite)):
            if v is not None:
                self._options[name] = _CHECK[name](v)
        cls = type(optimizer)
        groups = optimizer.param_groups
        for gi, g in enumerate(groups):
            if _lowp.options(g) != tuple(_lowp.KEYS.values()):
                raise ValueError(f"param_groups[{gi}]: ShardedOptimizer keeps state in the parameters' dtype; "
                                 "low-precision state (state_dtype=...) is not sharded")
        self.mode = sharding(cls, groups)
        params = list(optimizer._params)
        dtypes = sorted({str(a.dtype) for a in params})
        if len(dtypes) != 1:
            raise TypeError(f"ShardedOptimizer needs parameters of one dtype, got {' and '.join(dtypes)}; shard each "
                            "dtype with an optimizer of its own")
        self.optimizer = optimizer
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.last_grad_norm: float | None = None
        self.skipped_steps = 0
        self._spec = RuleSpec.of(cls)
        self._dtype = dtype = params[0].dtype
        if dtype not in _MPI_TYPES:
            raise TypeError(f"ShardedOptimizer shards float32 or float64 parameters, got {dtype} (bfloat16 "
                            "parameters are not supported: MPI has no bfloat16 reduction)")
        self._mpi_type = _MPI_TYPES[dtype]
        self._shapes = [a.shape for a in params]
        sizes = [a.size for a in params]
        self._offsets: list[int] = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64).tolist()
        n = self._n = self._offsets[-1]
        self.bounds = partition(sizes, self.size, self.mode == "tensors")
        self._counts = [self.bounds[r + 1] - self.bounds[r] for r in range(self.size)]
        self._displs = self.bounds[:-1]
        # the parameters' own memory when they are consecutive views of one array, else a copy
        flat = _flat_of(params, n, dtype)
        self._copy_params = flat is None
        if flat is None:
            flat = np.empty(n, dtype)
            for arr, o in zip(params, self._offsets):
                flat[o:o + arr.size] = arr.reshape(-1)
        self._flat = flat
        self._params = params
        self._send: npt.NDArray[Any] | None = None    # the flat gradients, when the given ones are not flat already
        self._grads: list[npt.NDArray[Any]] | None = None
        lo, hi = self.bounds[self.rank], self.bounds[self.rank + 1]
        self._recv = np.empty(hi - lo, dtype)       # this rank's shard of the averaged gradients
        # this rank's pieces: (tensor, first, end) in the tensor's elements
        self._pieces: list[tuple[int, int, int]] = []
        pieces = self._pieces
        owner_starts = self.bounds[:-1]
        for i, (o, m) in enumerate(zip(self._offsets, sizes)):
            if m == 0:
                if bisect.bisect_right(owner_starts, o) - 1 == self.rank:
                    pieces.append((i, 0, 0))
            else:
                a, b = max(o, lo), min(o + m, hi)
                if a < b:
                    pieces.append((i, a - o, b - o))
        group_of = [gi for gi, g in enumerate(groups) for _ in g["params"]]
        empty = (0, 0) if self._spec.matrix_only else (0,)
        inner_groups = [{**self._hyper(g), **{k: g[k] for k in self._spec.group_state if k in g}, "params": []}
                        for g in groups]
        # per inner parameter: its piece, or None for a group's placeholder
        self._inner_index: list[tuple[int, int, int] | None] = []
        grad_views: list[list[npt.NDArray[Any]]] = [[] for _ in groups]
        for piece in pieces:
            i, a, b = piece
            start = self._offsets[i] + a
            view = flat[start:start + b - a]
            gview = self._recv[start - lo:start - lo + b - a]
            if self.mode == "tensors":
                view, gview = view.reshape(self._shapes[i]), gview.reshape(self._shapes[i])
            inner_groups[group_of[i]]["params"].append((view, gview, piece))
        for gi, g in enumerate(inner_groups):
            if not g["params"]:      # a group with nothing on this rank keeps its index with an empty tensor
                g["params"] = [(np.empty(empty, dtype), np.empty(empty, dtype), None)]
            grad_views[gi] = [gv for _, gv, _ in g["params"]]
            self._inner_index += [pc for _, _, pc in g["params"]]
            g["params"] = [v for v, _, _ in g["params"]]
        self._grad_views = [gv for gs in grad_views for gv in gs]
        self._inner = _new_optimizer(cls, inner_groups)
        # the norm: this rank's block sums, and where every rank's go in the gathered vector
        nblocks = [-(-m // BLOCK) for m in sizes]
        self._block_starts: list[int] = (np.concatenate([[0], np.cumsum(nblocks, dtype=np.int64)])
                                         .astype(np.int64).tolist())
        counts = []
        for r in range(self.size):
            blo, bhi = self.bounds[r], self.bounds[r + 1]
            c = 0
            for o, m in zip(self._offsets, sizes):
                a, b = max(o, blo), min(o + m, bhi)
                if a < b:
                    c += -(-(b - a) // BLOCK)
            counts.append(c)
        self._block_counts = counts
        self._block_displs: list[int] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)[:-1].tolist()

    # ---- groups -------------------------------------------------------------
    def _hyper(self, g: dict[str, Any]) -> dict[str, Any]:
        """A group's hyperparameters (what the user sets), less the parameters and per-group scalars."""
        return {k: v for k, v in g.items() if k != "params" and k not in self._spec.group_state}

    def _push_groups(self) -> None:
        """The wrapped optimizer's hyperparameters (changed by the user, a schedule) to the shard's."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self._inner.param_groups):
            raise ValueError("the wrapped optimizer's parameter groups changed; build a new ShardedOptimizer "
                             "(add_param_group is not supported)")
        hyper = [self._hyper(g) for g in groups]
        if all(len(h) == len(mine) - 1 - sum(k in mine for k in self._spec.group_state) and
               all(mine.get(k, _MISSING) is v for k, v in h.items())
               for h, mine in zip(hyper, self._inner.param_groups)):
            return                                  # (every step: nothing changed)
        sharding(type(self.optimizer), groups)      # checked before anything changes
        for gi, g in enumerate(groups):
            if _lowp.options(g) != tuple(_lowp.KEYS.values()):
                raise ValueError(f"param_groups[{gi}]: ShardedOptimizer keeps state in the parameters' dtype; "
                                 "low-precision state (state_dtype=...) is not sharded")
        for h, mine in zip(hyper, self._inner.param_groups):
            for k in [k for k in mine if k != "params" and k not in self._spec.group_state and k not in h]:
                del mine[k]
            mine.update(h)

    def _pull_groups(self) -> None:
        """The shard's per-group scalars (schedule-free's k, train_mode, ...) into the wrapped optimizer's groups."""
        for g, mine in zip(self.optimizer.param_groups, self._inner.param_groups):
            for k in self._spec.group_state:
                if k in mine:
                    g[k] = mine[k]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (whole parameters; hyperparameters are set here).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> opt = ShardedOptimizer(etakit.SGD([np.zeros(3)], lr=0.1), MPI.COMM_SELF)
        >>> opt.param_groups[0]["lr"] = 0.01     # read at the next step
        >>> opt.current_lr()
        [0.01]
        """
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        """Completed steps (skipped ones not counted).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> opt = ShardedOptimizer(etakit.SGD([np.zeros(3)], lr=0.1), MPI.COMM_SELF)
        >>> opt.step([np.ones(3)]); opt.step_count
        1
        """
        return self._inner.step_count

    def current_lr(self) -> list[float]:
        """The learning rate of each group for the next step.

        Returns
        -------
        list of float
            One learning rate per parameter group (a schedule's value at
            the next step).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> from etakit import schedules as S
        >>> opt = ShardedOptimizer(etakit.SGD([np.zeros(3)], lr=S.step(1.0, step_size=1, gamma=0.5)), MPI.COMM_SELF)
        >>> opt.step([np.ones(3)]); opt.current_lr()
        [0.5]
        """
        self._push_groups()
        return self._inner.current_lr()

    # ---- the loop options -------------------------------------------------------
    global_clipnorm = _option("global_clipnorm", """Clip the averaged gradients to this global norm (None: no clipping).

        Not set here (or deleted), the wrapped optimizer's ``global_clipnorm``,
        read at each step; set here (None included), it overrides it.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(2)
        >>> opt = ShardedOptimizer(etakit.SGD([w], lr=1.0), MPI.COMM_SELF)
        >>> opt.global_clipnorm = 1.0
        >>> opt.step([np.array([3.0, 4.0])]); w.round(3)    # the gradient clipped to norm 1
        array([-0.6, -0.8])
        """)
    norm_type = _option("norm_type", """The order of the global norm (any > 0, inf too).

        Not set here (or set to None), the wrapped optimizer's ``norm_type``,
        read at each step.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> opt = ShardedOptimizer(etakit.SGD([np.zeros(2)], lr=1.0), MPI.COMM_SELF, global_clipnorm=1.0)
        >>> opt.norm_type
        2.0
        >>> opt.norm_type = float("inf"); opt.step([np.array([3.0, 4.0])]); opt.last_grad_norm
        4.0
        """)
    nonfinite = _option("nonfinite", """What a non-finite global norm does: 'ignore', 'skip' or 'raise'.

        Not set here (or set to None), the wrapped optimizer's ``nonfinite``,
        read at each step; when that is None too, 'raise' while clipping and
        'ignore' otherwise.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(2)
        >>> opt = ShardedOptimizer(etakit.SGD([w], lr=1.0), MPI.COMM_SELF, nonfinite="skip")
        >>> opt.step([np.array([np.nan, 1.0])]); opt.skipped_steps, opt.step_count, w
        (1, 0, array([0., 0.]))
        """)

    # ---- the step --------------------------------------------------------------
    @property
    def grads(self) -> list[npt.NDArray[Any]]:
        """Arrays to write this rank's gradients into (views of one flat buffer, shaped as the
        parameters): ``step()`` then reads them without a copy.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(3)
        >>> opt = ShardedOptimizer(etakit.SGD([w], lr=0.1), MPI.COMM_SELF)
        >>> opt.grads[0][:] = [1.0, 2.0, 3.0]      # this rank's gradient, written in place
        >>> opt.step(); w
        array([-0.1, -0.2, -0.3])
        """
        if self._grads is None:
            self._send = np.zeros(self._n, self._dtype)
            self._grads = [self._send[o:o + int(np.prod(s, dtype=np.int64))].reshape(s)
                           for o, s in zip(self._offsets, self._shapes)]
        return self._grads

    def _flat_grads(self, grads: Sequence[npt.NDArray[Any]] | None) -> npt.NDArray[Any]:
        if grads is None:
            if self._grads is None or self._send is None:
                raise GradientError("step() without gradients reads opt.grads; write this rank's gradients into "
                                    "opt.grads, or pass them: opt.step(grads)")
            return self._send
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            raise GradientTypeError(f"grads must be a list of arrays (one per parameter), got {type(grads).__name__}")
        if len(grads) != len(self._shapes):
            raise GradientError(f"got {len(grads)} gradients for {len(self._shapes)} parameters")
        for i, (g, s) in enumerate(zip(grads, self._shapes)):
            if not isinstance(g, np.ndarray):
                raise GradientTypeError(f"grads[{i}] must be a numpy array, got {type(g).__name__}", i)
            if g.dtype != self._dtype:
                raise GradientTypeError(f"grads[{i}] has dtype {g.dtype}; the parameters are {self._dtype}", i)
            if g.shape != s:
                raise GradientError(f"grads[{i}] has shape {g.shape}; its parameter has {s}", i)
        flat = _flat_of(grads, self._n, self._dtype)
        if flat is not None:
            return flat
        if self._send is None:
            self._send = np.empty(self._n, self._dtype)
        send = self._send
        for g, o in zip(grads, self._offsets):
            np.copyto(send[o:o + g.size].reshape(g.shape), g)
        return send

    def step(self, grads: Sequence[npt.NDArray[Any]] | None = None) -> None:
        """One step of the whole model from this rank's gradients (a collective: every rank calls it).

        Parameters
        ----------
        grads : list of ndarray, optional
            This rank's gradients, one per parameter (group order), of the
            parameters' dtype and shapes.  Default: those written into
            :attr:`grads`.

        Raises
        ------
        etakit.GradientError
            A gradient of the wrong count or shape (TypeError too: of the
            wrong type or dtype), before any communication; with
            ``nonfinite="raise"``, a non-finite global norm, on every rank,
            before anything is written.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(3)
        >>> opt = ShardedOptimizer(etakit.SGD([w], lr=0.1), MPI.COMM_SELF)
        >>> opt.step([np.array([1.0, 2.0, 3.0])]); w     # on one rank: the plain SGD step
        array([-0.1, -0.2, -0.3])
        """
        if self.optimizer._loop.ema_decay is not None:
            raise ValueError("ShardedOptimizer: the wrapped optimizer has ema_decay set; an EMA of the parameters "
                             "is not sharded (keep one of the gathered parameters on the rank that evaluates)")
        clip, p, policy = self.global_clipnorm, self.norm_type, self.nonfinite
        self._push_groups()
        send = self._flat_grads(grads)
        recv = self._recv
        self.comm.Reduce_scatter(send, recv, self._counts, op=MPI.SUM)
        if self.size > 1:
            np.divide(recv, self.size, out=recv)          # the mean, as (g0 + ... ) / R
        if clip is not None or policy != "ignore":
            total, values = self._global_norm(p)
            self.last_grad_norm = total
            if not math.isfinite(total):
                if policy == "skip":
                    self.skipped_steps += 1
                    return
                if policy == "raise":
                    bad = next((i for i, v in enumerate(values) if v is not None and not math.isfinite(v)), 0)
                    raise GradientError(f"the gradients averaged over the ranks have a non-finite norm "
                                        f"({total}); grads[{bad}] (parameter of shape {self._shapes[bad]}) is the "
                                        "first with a NaN or inf; nothing was written (nonfinite='raise')", bad)
            if clip is not None:
                coef = clip / (total + 1e-6)     # as etakit.clip_grad_norm_ and torch
                if coef > 1.0:
                    coef = 1.0
                if coef != 1.0:
                    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
                        np.multiply(recv, coef, out=recv)
        if self._copy_params:      # the user may have changed the parameters since the last step
            for i, a, b in self._pieces:
                o = self._offsets[i]
                self._flat[o + a:o + b] = self._params[i].reshape(-1)[a:b]
        self._inner.step(self._grad_views)
        self._gather_params()
        self._pull_groups()

    def _gather_params(self) -> None:
        self.comm.Allgatherv(MPI.IN_PLACE, [self._flat, self._counts, self._displs, self._mpi_type])
        if self._copy_params:
            for a, o in zip(self._params, self._offsets):
                a.reshape(-1)[...] = self._flat[o:o + a.size]

    def _global_norm(self, p: float) -> tuple[float, list[float | None]]:
        """The ``p``-norm of all averaged gradients, the same on every rank (see the module docstring),
        and the per-tensor values it was combined from (``etakit.loop._combine``'s inputs)."""
        ntensors = len(self._shapes)
        lo = self.bounds[self.rank]
        views = [(i, self._recv[self._offsets[i] + a - lo:self._offsets[i] + b - lo]) for i, a, b in self._pieces]
        if math.isinf(p):
            local = np.full(ntensors, -1.0)      # -1: no element here
            with np.errstate(invalid="ignore"):
                for i, v in views:
                    if v.size:
                        m = float(np.abs(v).max())
                        local[i] = m if local[i] < 0 or m != m else max(local[i], m)
            every: npt.NDArray[np.float64] = np.empty((self.size, ntensors))
            self.comm.Allgather(local, every)
            with np.errstate(invalid="ignore"):
                per = every.max(axis=0)           # NaN propagates, as in torch
            values: list[float | None] = [None if v < 0 else float(v) for v in per]
        else:
            sums = [_block_sums(v, p) for _, v in views if v.size]
            local = np.concatenate(sums) if sums else np.empty(0)
            every = np.empty(self._block_starts[-1])
            self.comm.Allgatherv(local, [every, self._block_counts, self._block_displs, MPI.DOUBLE])
            values = []
            for i in range(ntensors):
                s, e = self._block_starts[i], self._block_starts[i + 1]
                values.append(float(np.add.accumulate(every[s:e])[-1]) if e > s else 0.0)
        return _combine(values, p), values

    # ---- modes (schedule-free) ------------------------------------------------
    def train(self) -> None:
        """The wrapped rule's ``train()`` (schedule-free: parameters back to y), on every rank's shard.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> opt = ShardedOptimizer(etakit.ScheduleFreeSGD([np.zeros(2)], lr=0.1), MPI.COMM_SELF)
        >>> opt.train(); opt.param_groups[0]["train_mode"]
        True
        """
        self._mode("train")

    def eval(self) -> None:
        """The wrapped rule's ``eval()`` (schedule-free: parameters to x, the average), on every rank's shard.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(2)
        >>> opt = ShardedOptimizer(etakit.ScheduleFreeSGD([w], lr=0.1), MPI.COMM_SELF)
        >>> opt.train(); opt.step([np.ones(2)]); opt.step([np.ones(2)])
        >>> opt.eval(); w          # x, the average (as etakit.ScheduleFreeSGD's eval)
        array([-0.15, -0.15])
        """
        self._mode("eval")

    def _mode(self, name: str) -> None:
        f = getattr(self._inner, name, None)
        if f is None:
            raise AttributeError(f"{type(self.optimizer).__name__} has no {name}() (only optimizers with modes, "
                                 "such as the schedule-free ones, do)")
        self._push_groups()
        if self._copy_params:
            for i, a, b in self._pieces:
                o = self._offsets[i]
                self._flat[o + a:o + b] = self._params[i].reshape(-1)[a:b]
        f()
        self._gather_params()
        self._pull_groups()

    # ---- checkpoints ------------------------------------------------------------
    def _layout(self) -> dict[str, Any]:
        return {"rank": self.rank, "size": self.size, "bounds": list(self.bounds), "mode": self.mode,
                "shapes": [list(s) for s in self._shapes], "dtype": str(self._dtype)}

    def state_dict(self) -> dict[str, Any]:
        """This rank's part of the state (no communication): its shard's optimizer state and the layout.

        Save one file per rank (``etakit.save(f"ckpt.{rank}.npz", opt)``) and
        load each back on the same rank of the same rank count to resume
        bit-identically; :meth:`consolidated_state_dict` gives one portable
        state dict instead.

        Returns
        -------
        dict
            ``{"shard": layout, "optimizer": state dict of this rank's shard,
            "skipped_steps": int}``; the layout (rank, rank count, shard
            bounds, shapes, dtype) is checked on loading.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> opt = ShardedOptimizer(etakit.Adam([np.zeros(3)], lr=0.1), MPI.COMM_SELF)
        >>> opt.step([np.ones(3)])
        >>> sd = opt.state_dict(); sd["shard"]["bounds"], sorted(sd["optimizer"]["state"][0])
        ([0, 3], ['exp_avg', 'exp_avg_sq', 'step'])
        """
        return {"shard": self._layout(), "optimizer": self._inner.state_dict(), "skipped_steps": self.skipped_steps}

    def consolidated_state_dict(self, to: int = 0) -> dict[str, Any] | None:
        """The whole optimizer's state, gathered on rank ``to`` (a collective; None on the other ranks).

        Exactly the ``state_dict()`` of the wrapped optimizer's class stepped
        in one process (state per parameter, whole, under its index), so it
        loads into a single-process optimizer, or into a ShardedOptimizer on
        any rank count.

        Parameters
        ----------
        to : int, default 0
            The rank that receives the state.

        Returns
        -------
        dict or None
            On rank ``to``, the single-process state dict; None on the other
            ranks.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> w = np.zeros(3)
        >>> opt = ShardedOptimizer(etakit.Adam([w], lr=0.1), MPI.COMM_SELF)
        >>> opt.step([np.ones(3)])
        >>> whole = etakit.Adam([w.copy()], lr=0.1)     # one process, the same parameters
        >>> whole.load_state_dict(opt.consolidated_state_dict()); whole.step_count
        1
        """
        if isinstance(to, bool) or not isinstance(to, numbers.Integral) or not 0 <= to < self.size:
            raise ValueError(f"to must be a rank in 0..{self.size - 1}, got {to!r}")
        mine = self._inner.state_dict()
        state = {j: mine["state"][j] for j, pc in enumerate(self._inner_index) if pc is not None and j in mine["state"]}
        parts = self.comm.gather((list(self._inner_index), state), root=to)
        if self.rank != to:
            return None
        pieces = {}          # tensor -> [(first element, state entry)]
        for index, st in parts:
            for j, pc in enumerate(index):
                if pc is not None and j in st:
                    pieces.setdefault(pc[0], []).append((pc[1], st[j]))
        spec = self._spec
        state = {}
        for i, parts_i in sorted(pieces.items()):
            parts_i.sort(key=lambda x: x[0])
            entry = {}
            for name, v in parts_i[0][1].items():
                j = spec.slot_names.index(name) if name in spec.slot_names else None
                if self.mode == "elements" and j is not None and spec.slots[j]["shape"] == "full":
                    v = np.concatenate([e[name].reshape(-1) for _, e in parts_i]).reshape(self._shapes[i])
                entry[name] = v
            state[i] = entry
        groups = self.optimizer.state_dict()["param_groups"]
        return {"state": state, "param_groups": groups, "step_count": mine["step_count"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (this rank's, same rank count and layout) or a consolidated one.

        A consolidated state dict (from :meth:`consolidated_state_dict`, or
        the ``state_dict()`` of a single-process optimizer of the same class
        over the same parameters) is checked whole, then each rank keeps its
        shard; it may come from any rank count.  Everything is checked before
        anything changes.

        Parameters
        ----------
        state_dict : dict
            This rank's :meth:`state_dict`, or a consolidated state dict.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from mpi4py import MPI
        >>> from etakit.distributed import ShardedOptimizer
        >>> single = etakit.Adam([np.zeros(3)], lr=0.1)     # stepped in one process
        >>> single.step([np.ones(3)])
        >>> opt = ShardedOptimizer(etakit.Adam([np.zeros(3)], lr=0.1), MPI.COMM_SELF)
        >>> opt.load_state_dict(single.state_dict()); opt.step_count
        1
        """
        if isinstance(state_dict, dict) and "shard" in state_dict:
            if not isinstance(state_dict["shard"], dict) or not isinstance(state_dict.get("optimizer"), dict):
                raise ValueError("a ShardedOptimizer state dict has a 'shard' layout (a dict) and an 'optimizer' "
                                 f"state dict, got {type(state_dict['shard']).__name__} and "
                                 f"{type(state_dict.get('optimizer')).__name__}")
            _refuse_lowp(state_dict["optimizer"])
            self._load_shard(state_dict)
        else:
            if isinstance(state_dict, dict):
                _refuse_lowp(state_dict)
            self._load_whole(state_dict)

    def _load_shard(self, sd: dict[str, Any]) -> None:
        theirs, mine = sd["shard"], self._layout()
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if theirs.get(k) != mine.get(k))
            raise StateError(f"this state dict is the shard of rank {theirs.get('rank')} of {theirs.get('size')}; "
                             f"this is rank {self.rank} of {self.size} (differing: {', '.join(diff)}); load each "
                             "rank's own file on the same rank count, or a consolidated state dict "
                             "(consolidated_state_dict) on any")
        skipped = sd.get("skipped_steps", 0)
        if isinstance(skipped, bool) or not isinstance(skipped, numbers.Integral) or skipped < 0:
            raise ValueError(f"skipped_steps must be an int >= 0, got {skipped!r}")
        self._inner.load_state_dict(sd["optimizer"])
        for g, mine_g in zip(self.optimizer.param_groups, self._inner.param_groups):
            params = g["params"]
            g.clear()
            g.update({k: v for k, v in mine_g.items() if k != "params"}, params=params)
        self.skipped_steps = int(skipped)

    def _load_whole(self, sd: dict[str, Any]) -> None:
        cls = type(self.optimizer)
        check = _new_optimizer(cls, [{**g, "params": list(g["params"])} for g in self.optimizer.param_groups])
        check.load_state_dict(sd)              # everything checked, against the whole parameters
        sharding(cls, check.param_groups)
        spec = self._spec
        state = {}
        for j, pc in enumerate(self._inner_index):
            if pc is None:
                continue
            i, a, b = pc
            st = check._state[i]
            if not st and not check._steps[i]:
                continue
            entry = {"step": int(check._steps[i])}
            for name, v in st.items():
                k = spec.slot_names.index(name)
                if self.mode == "elements" and spec.slots[k]["shape"] == "full":
                    v = v.reshape(-1)[a:b]
                entry[name] = v
            state[j] = entry
        inner_groups, start = [], 0
        for g, mine in zip(check.param_groups, self._inner.param_groups):
            n = len(mine["params"])
            inner_groups.append({**{k: v for k, v in g.items() if k != "params"},
                                 "params": list(range(start, start + n))})
            start += n
        self._inner.load_state_dict({"state": state, "param_groups": inner_groups, "step_count": check.step_count})
        for g, loaded in zip(self.optimizer.param_groups, check.param_groups):
            params = g["params"]
            g.clear()
            g.update({k: v for k, v in loaded.items() if k != "params"}, params=params)

    def __repr__(self) -> str:
        return (f"ShardedOptimizer({type(self.optimizer).__name__}, rank {self.rank} of {self.size}, "
                f"{self._counts[self.rank]} of {self._n} elements, sharded by {self.mode})")


_MISSING = object()


def _check_clipnorm(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0 or not math.isfinite(v):
        raise ValueError(f"global_clipnorm must be a finite number >= 0 or None, got {v!r}")
    return float(v)


def _check_norm_type(v: Any) -> float:
    p = _norm_type(v)
    if not (p > 0):
        raise ValueError(f"norm_type must be > 0 (2.0, 1.0, float('inf'), ...), got {v!r}")
    return p


def _check_nonfinite(v: Any) -> str:
    if v not in _NONFINITE:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, _NONFINITE))}, got {v!r}")
    return v


def _refuse_lowp(sd: dict[str, Any]) -> None:
    """The constructor's refusal of low-precision state, for a state dict (malformed ones are left to the
    wrapped optimizer's checks): a group with ``state_dtype`` etc. set, or state arrays of another dtype."""
    groups = sd.get("param_groups")
    for gi, g in enumerate(groups if isinstance(groups, (list, tuple)) else ()):
        if isinstance(g, dict) and _lowp.options(g) != tuple(_lowp.KEYS.values()):
            raise ValueError(f"param_groups[{gi}]: ShardedOptimizer keeps state in the parameters' dtype; "
                             "low-precision state (state_dtype=...) is not sharded")
    state = sd.get("state")
    for i, entry in (state.items() if isinstance(state, dict) else ()):
        for name, v in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(v, np.ndarray) and v.dtype not in _MPI_TYPES:
                raise ValueError(f"state[{i}][{name!r}] has dtype {v.dtype}: ShardedOptimizer keeps state in the "
                                 "parameters' dtype; low-precision state (state_dtype=...) is not sharded")


def _new_optimizer(cls: type[_optim.Optimizer], groups: list[dict[str, Any]]) -> _optim.Optimizer:
    """``cls(groups)``: every optimizer class is built from its groups alone (each hyperparameter has a
    default), which mypy cannot see from the base class's ``__init__(params, defaults)``."""
    return cast("Callable[[list[dict[str, Any]]], _optim.Optimizer]", cls)(groups)


def _one_line(v: object, limit: int = 200) -> str:
    text = " ".join(str(v).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


_CHECK = {"global_clipnorm": lambda v: None if v is None else _check_clipnorm(v), "norm_type": _check_norm_type,
          "nonfinite": _check_nonfinite}
