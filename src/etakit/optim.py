"""Optimizers over numpy arrays: each rule's reference semantics, one fused C call per step.

The Python layer owns everything but the arithmetic: parameter groups,
validation (all of it before anything is written), optimizer state and its
serialisation.  A rule is declared once, by its class below: the C rule name,
the group keys that pack several C fields (``betas``), the signature with its
defaults, and the docstring.  Everything else (fields, ranges, which fields
can follow a schedule, state slots and when each is needed) comes from the C
rule table through ``etakit._step.RuleSpec``, and the link to the engine
(``Stepper``) is shared with the PyTorch drop-ins of ``etakit.torch``.

Per step, the hyperparameters of every group are read and compared with the
last validated values; only a change triggers validation again (and, where
the options need a state buffer that does not exist yet, its allocation).
"""
from __future__ import annotations

import numbers
import operator
import re
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, Optional, Protocol, TypedDict, TypeVar, Union

import numpy as np
import numpy.typing as npt

import functools
import inspect

from . import _core, _lowp, _passes
from ._step import NESTED, ConfigKey, Group, HostStep, RuleSpec, State, Stepper, value_at
from .errors import HyperparameterError, NonFiniteGradientError, StateError
from .reference import group_step, zeropower_via_newtonschulz
from .schedules import Schedule, from_dict, is_schedule_dict

__all__ = ["Optimizer", "OPTIMIZERS", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Lion", "NAdam", "RAdam", "Adamax",
           "Adan", "ADOPT", "AdEMAMix", "LAMB", "LARS", "Adadelta", "ASGD", "Rprop", "Adafactor", "Muon", "DoG",
           "LDoG", "ScheduleFreeAdamW", "ScheduleFreeSGD", "ScheduleFreeRAdam", "Prodigy", "DAdaptAdam", "DAdaptSGD",
           "DAdaptAdaGrad"]

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# a step count a C int64 step counter can still advance from
_MAX_STEP = 2**62

# the parameters an optimizer takes: arrays, or parameter-group dicts {"params": [...], **hyperparameters}
Params = Union[Iterable[npt.NDArray[Any]], Iterable[Group]]
# a hyperparameter that may follow a schedule: a number, an etakit schedule or any f(step) -> number
Scheduled = Union[float, Callable[[int], float]]


class OptimizerOptions(TypedDict, total=False):
    """The keyword-only options every optimizer takes (``etakit._lowp.KEYS`` and ``etakit._passes.KEYS``).

    The ``__init__`` that ``Optimizer.__init_subclass__`` wraps around each
    class's own takes them, so the ``**options`` of a class's ``__init__``
    (which declares them for type checkers) never receives any.
    """

    state_dtype: Literal["float32", "bfloat16", "int8"]
    stochastic_rounding: bool
    min_8bit_size: int
    sr_seed: int
    kahan: Optional[bool]
    global_clipnorm: Optional[float]
    norm_type: Union[float, str]
    nonfinite: Optional[Literal["raise", "skip", "ignore"]]
    ema_decay: Optional[float]
    ema_warmup: bool
    ema_warmup_gamma: float
    ema_warmup_power: float
    ema_min_decay: float
    ema_update_after_step: int


def _encode(v: Any) -> Any:
    """Group values in plain data: schedules as dicts (callables stay as they are)."""
    if isinstance(v, Schedule):
        return v.to_dict()
    if isinstance(v, tuple):
        return tuple(_encode(x) for x in v)
    return v


def _decode(v: Any) -> Any:
    if is_schedule_dict(v):
        return from_dict(v)
    if isinstance(v, (tuple, list)) and any(is_schedule_dict(x) for x in v):
        return tuple(_decode(x) for x in v)
    return v


def _check_param(p: object, where: str) -> None:
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where} must be a numpy.ndarray, got {type(p).__name__}")
    if (p.dtype not in _FLOATS and p.dtype.name != "bfloat16") or not p.dtype.isnative:
        raise TypeError(f"{where} has dtype {p.dtype}; etakit updates float32, float64 or bfloat16 "
                        "(ml_dtypes.bfloat16) arrays in native byte order")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous (shape {p.shape}, strides {p.strides}); "
                         "parameters are updated in place and never copied: make the parameter "
                         "itself contiguous with np.ascontiguousarray and keep that array")
    if not p.flags.aligned:
        raise ValueError(f"{where} is not aligned to its dtype")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only; parameters are updated in place")


def _check_matrix(p: npt.NDArray[Any], where: str, name: str) -> None:
    """Refuse a parameter that is not 2-D, for rules that update matrices only (Muon)."""
    if p.ndim != 2:
        raise ValueError(f"{where} has shape {tuple(p.shape)}; {name} updates 2-D parameters (matrices) only, as "
                         "its reference does: optimise the others (biases, norms, embeddings) with another "
                         "optimizer such as AdamW")


def _check_no_overlap(arrays: Sequence[npt.NDArray[Any]], labels: Sequence[str]) -> None:
    """Raise if two arrays are the same object or share memory (n log n)."""
    seen: dict[int, str] = {}
    for a, label in zip(arrays, labels):
        if id(a) in seen:
            raise ValueError(f"{seen[id(a)]} and {label} are the same array; each parameter may "
                             "appear once")
        seen[id(a)] = label
    pair = _core.first_overlap(list(arrays))
    if pair is not None:
        raise ValueError(f"{labels[pair[0]]} and {labels[pair[1]]} overlap in memory; parameters must be "
                         "distinct buffers")


def _step_value(v: Any, where: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or \
            not 0 <= v < _MAX_STEP:  # type: ignore[operator]  # typeshed's numbers.Integral has no __ge__
        raise ValueError(f"{where} must be an integer >= 0 and < 2**62, got {v!r}")
    return int(v)


def _loop_property(name: str, doc: str) -> property:
    """An optimizer's loop option ``name`` (etakit._passes), as a property checked when set."""
    def get(self: Optimizer) -> Any:
        return getattr(self._loop, name)

    def set_(self: Optimizer, v: Any) -> None:
        with self._stepper:
            setattr(self._loop, name, v)
            if name == "ema_decay" and v is not None and self._ema is None:
                self._stepper.plan = None
    return property(get, set_, doc=doc)


# ------------------------------------------------------------- optimizer

class Optimizer:
    """Base class of etakit's optimizers.

    A subclass declares its rule: ``rule`` (the C rule name), ``_tuples``
    (group keys that pack several C fields, ``{"betas": ("beta1", "beta2")}``),
    ``_extra`` (group keys outside the C struct), ``_none_means`` (group keys
    whose ``None`` stands for a value of the C field), ``_choices`` (group
    keys whose values are names of a C integer), its ``__init__`` signature
    with PyTorch-style defaults, and its docstring.  A rule whose step has
    host work between its C phases (Muon's matrix products) declares it as
    ``_host_step(stepper, groups)``, run after the first ``_host_split``
    phases (``etakit._step.Stepper.run_split``).

    Parameters
    ----------
    params : list of ndarray or list of dict
        The parameters: C-contiguous, writable float32 or float64 arrays of
        any shape, or parameter-group dicts ``{"params": [...], **hyperparameters}``
        whose values override ``defaults`` (as in PyTorch).
    defaults : dict
        Default hyperparameters.

    Notes
    -----
    One optimizer may be stepped from several threads: steps are serialised
    (a second thread waits for the first), so none is lost.  Separate
    optimizers step in parallel, with the GIL released.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(4, dtype=np.float32)
    >>> opt = etakit.SGD([w], lr=0.5)
    >>> opt.step([np.ones(4, dtype=np.float32)])
    >>> w
    array([-0.5, -0.5, -0.5, -0.5], dtype=float32)
    """

    rule: str | None = None
    reference_impl: str | None = None   # the implementation the rule matches (default: torch.optim.<class name>)
    _tuples: dict[str, tuple[str, ...]] = {}
    _extra: dict[str, Callable[[Any, str], object]] = {}
    _torch_step: str | None = "state"   # where etakit.torch keeps the step count: "state", "group" or None
    _implied: dict[str, Any] = {}           # group entries the class sets beyond its signature
    # state its reference creates at a later step when missing (SGD's momentum_buffer)
    _lazy_state: tuple[str, ...] = ()
    # state names of its reference that etakit does not keep (accepted, dropped, on load)
    _ignored_state: tuple[str, ...] = ()
    _group_optional: tuple[str, ...] = ()    # group keys a reference checkpoint may lack (it keeps them elsewhere)
    # {group key: the C value its None stands for} (the reference's Optional arguments)
    _none_means: dict[str, Any] = {}
    _choices: dict[str, dict[Any, int]] = {}    # group keys whose values are names: {key: {value: C int}}
    _host_step: HostStep | None = None       # f(stepper, groups): host work between the rule's C phases
    _host_split = 1         # C phases run before _host_step
    # per-group scalars not starting at 0: {name: number, or the group key it copies}
    _group_state: dict[str, float | str] = {}
    # state names the reference may keep as one 0-d value standing for the whole buffer
    _constant_state: tuple[str, ...] = ()
    # classes etakit.torch's drop-in derives from too (methods both front ends share)
    _front_end_mixins: tuple[type, ...] = ()
    _torch_example = "lr=0.1"   # the arguments of the drop-in's docstring example
    _loop: _passes.LoopOptions  # the loop's passes (set by the __init__ that __init_subclass__ wraps)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every optimizer takes the keyword-only low-precision options (etakit._lowp):
        ``state_dtype``, ``stochastic_rounding``, ``min_8bit_size``, ``sr_seed`` and ``kahan``; they become group keys
        only when they differ from their defaults, so a float32 optimizer's groups are as before."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_lowp_wrapped", False):
            return
        sig = inspect.signature(init)
        # a class's __init__ declares these options as **options (OptimizerOptions), for type checkers: the
        # wrapper below takes them, and refuses any other keyword its own parameters lack, as Python would
        named = {n for n, p in sig.parameters.items()
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())

        @functools.wraps(init)
        def __init__(self: Optimizer, *args: Any, state_dtype: str = "float32", stochastic_rounding: bool = False,
                     min_8bit_size: int = 4096, sr_seed: int = 0, kahan: bool | None = None, **kw: Any) -> None:
            given = {k: v for k, v in (("state_dtype", state_dtype), ("stochastic_rounding", stochastic_rounding),
                                       ("min_8bit_size", min_8bit_size), ("sr_seed", sr_seed), ("kahan", kahan))
                     if not _same(v, _lowp.KEYS[k])}
            if given:
                self.__dict__.setdefault("_lowp_defaults", {}).update(given)
            # the loop's passes (etakit._passes): optimizer-wide, not group keys (a subclass's
            # __init__ calling its base's keeps what the subclass's call was given)
            loop = {k: kw.pop(k) for k in _passes.KEYS if k in kw}
            if loop or "_loop" not in self.__dict__:
                self.__dict__["_loop"] = _passes.LoopOptions(**loop)
            if var_kw:
                for k in kw:
                    if k not in named:
                        raise TypeError(f"{init.__qualname__}() got an unexpected keyword argument {k!r}")
            init(self, *args, **kw)

        extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                 for k, v in {**_lowp.KEYS, **_passes.KEYS}.items() if k not in sig.parameters]
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        __init__.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]  # (a function's)
        __init__._lowp_wrapped = True  # type: ignore[attr-defined]  # (a function's attribute)
        cls.__init__ = __init__  # type: ignore[method-assign]  # (the wrapper, with the class's signature)

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        self._stepper = Stepper(RuleSpec.of(type(self)))
        spec = self._stepper.spec
        self.defaults: dict[str, Any] = {**defaults, **self._implied, **self.__dict__.pop("_lowp_defaults", {})}
        spec.pack(self.defaults, "defaults")
        self.defaults.update(spec.group_state_start(self.defaults, list(self._group_state)))
        self._get_hp = operator.itemgetter(*spec.keys)
        self._warned: set[str] = set()
        self.param_groups: list[Group] = []
        self._params: list[npt.NDArray[Any]] = []
        self._labels: list[str] = []
        groups = self._parse_params(params)
        for gi, group in enumerate(groups):
            self._append_group(group, gi)
        _check_no_overlap(self._params, self._labels)
        n = len(self._params)
        self._state: list[State] = [{} for _ in range(n)]
        self._steps: list[int] = [0] * n
        self._fresh: dict[int, int] = {}   # per parameter: the bits of the state slots this step created
        self._fresh_comp: set[int] = set()   # ids of state dicts whose Kahan compensation this step made
        self._k = 0            # completed steps: what schedules are evaluated at
        self.__dict__.setdefault("_loop", _passes.LoopOptions())
        self._ema: list[npt.NDArray[Any]] | None = None    # per parameter: its EMA (ema_decay), made at the first step
        self._ema_swapped = False
        # accumulate(): per parameter its gradient sum, and the weight total
        self._accum: list[npt.NDArray[Any]] | None = None
        self._accum_weight = 0.0
        self.skipped_steps = 0
        self.last_grad_norm: float | None = None

    # ---- construction -------------------------------------------------
    @staticmethod
    def _parse_params(params: Any) -> list[Group]:
        if isinstance(params, np.ndarray) or isinstance(params, dict):
            raise TypeError("params must be a list of arrays or of parameter-group dicts, got "
                            f"a single {type(params).__name__}; wrap it in a list")
        try:
            params = list(params)
        except TypeError:
            raise TypeError("params must be a list of arrays or of parameter-group dicts, got "
                            f"{type(params).__name__}") from None
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(p, dict) for p in params):
            return [dict(g) for g in params]
        if any(isinstance(p, dict) for p in params):
            raise TypeError("params mixes arrays and parameter-group dicts; use one or the other")
        return [{"params": params, "_flat": True}]

    def _append_group(self, group: Group, gi: int) -> None:
        flat = group.pop("_flat", False)
        if "params" not in group:
            raise ValueError(f"param_groups[{gi}] has no 'params' entry")
        ps = group["params"]
        if isinstance(ps, np.ndarray):
            ps = [ps]
        elif isinstance(ps, (set, dict, str, bytes)) or not hasattr(ps, "__iter__"):
            raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, "
                            f"got {type(ps).__name__}")
        ps = list(ps)
        if not ps:
            raise ValueError(f"param_groups[{gi}] has an empty parameter list")
        for j, p in enumerate(ps):
            label = f"params[{j}]" if flat else f"param_groups[{gi}]['params'][{j}]"
            _check_param(p, label)
            if self._stepper.spec.matrix_only:
                _check_matrix(p, label, type(self).__name__)
            self._labels.append(label)
            self._params.append(p)
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._freeze(group)
        self._warn_unknown(group, f"param_groups[{gi}]")
        self._stepper.spec.pack(group, f"param_groups[{gi}]", self._k if hasattr(self, "_k") else 0)
        _lowp.check_params(group, ps, self._labels[-len(ps):], self._stepper.spec)
        self.param_groups.append(group)

    def _freeze(self, group: Group) -> None:
        """Lists in tuple-valued keys (betas) become tuples: a list changed in place would go unseen."""
        for key in self._stepper.spec.tuples:
            if isinstance(group.get(key), list):
                group[key] = tuple(group[key])

    def _warn_unknown(self, group: Group, where: str) -> None:
        spec = self._stepper.spec
        for key in spec.unknown_keys(group):
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"{where} has the key {key!r}, which {type(self).__name__} does not use (a typo?); "
                              f"its keys are {list(spec.keys)}", UserWarning, stacklevel=4)

    def add_param_group(self, param_group: Group) -> None:
        """Add a parameter group, as ``torch.optim.Optimizer.add_param_group``.

        Parameters
        ----------
        param_group : dict
            ``{"params": [arrays], **hyperparameters}``; a hyperparameter not
            given takes its value from the optimizer's defaults.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> opt = etakit.Adam([np.zeros(3)])
        >>> opt.add_param_group({"params": [np.zeros(2)], "lr": 1e-2})
        >>> [g["lr"] for g in opt.param_groups]
        [0.001, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        with self._stepper:
            n_groups, n_params = len(self.param_groups), len(self._params)
            try:
                self._append_group(dict(param_group), n_groups)
                _check_no_overlap(self._params, self._labels)
                if self._ema is not None or self._loop.ema_decay is not None:
                    _lowp.refuse_bf16_ema(self._params[n_params:], "add_param_group with ema_decay set")
            except (TypeError, ValueError):
                del self.param_groups[n_groups:], self._params[n_params:], self._labels[n_params:]
                raise
            added = len(self._params) - n_params
            self._sync_steps()
            if self._ema is not None:       # the new parameters' EMA starts as a copy of them
                self._ema += [p.copy() for p in self._params[n_params:]]
            self._state += [{} for _ in range(added)]
            self._steps += [0] * added
            self._stepper.plan = None
            self._stepper.key = None

    # ---- stepping ----------------------------------------------------
    def step(self, grads: Sequence[npt.NDArray[Any]] | None = None, *, grad_scale: float | None = None) -> None:
        """Update every parameter in place from its gradient, in one C call.

        Parameters
        ----------
        grads : list or tuple of ndarray, optional
            One gradient per parameter, in group order then order within the
            group; each with its parameter's dtype and shape, C-contiguous, and
            not sharing memory with any parameter or optimizer state.  None:
            the gradients gathered by :meth:`accumulate` since the last step.
        grad_scale : float, optional
            A loss scale the gradients carry: they are divided by it inside
            the step (and their norm is that of the unscaled gradients).

        Raises
        ------
        etakit.GradientError, etakit.HyperparameterError (ValueError, TypeError)
            On a bad gradient or hyperparameter; nothing has been written.
        etakit.NonFiniteGradientError
            A gradient holds inf or NaN and the ``nonfinite`` policy is
            ``"raise"``; nothing has been written.

        Notes
        -----
        The GIL is released during the update, so other Python threads run
        meanwhile.  Steps of one optimizer from several threads are serialised.

        The training loop's other passes ride on the step (keyword arguments
        of every optimizer):

        - ``global_clipnorm`` (and ``norm_type``, 2 or ``inf``; Keras' name,
          since LAMB and Adan have a ``max_grad_norm`` of their own): the gradients
          are clipped by their global norm over every parameter, as
          ``torch.nn.utils.clip_grad_norm_`` followed by the step.  The norm
          takes one read pass over the gradients, summed over fixed blocks
          (the same for any thread count); the scaling happens inside the
          update, block by block in cache, and the gradient arrays are not
          written.  ``last_grad_norm`` holds the norm before clipping.
        - ``nonfinite``, what a non-finite gradient (inf or NaN) does:
          ``"raise"``, ``"skip"`` (nothing is written, the step count and
          schedules do not advance, ``skipped_steps`` counts it) or
          ``"ignore"`` (as ``torch.optim``: an inf or NaN reaches its
          parameter).  The default is ``"raise"`` with clipping (the norm is
          made anyway, so the check is free) and ``"ignore"`` without (a check
          would cost a pass over the gradients).
        - ``ema_decay``: an exponential moving average of the parameters,
          updated in the same pass as the step, as timm's ``ModelEmaV3``
          (``ema_warmup``, ``ema_warmup_gamma``, ``ema_warmup_power``,
          ``ema_min_decay``, ``ema_update_after_step``); see :attr:`ema`,
          :meth:`swap_ema` and :meth:`ema_weights`.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.Adam([w], lr=0.1)
        >>> opt.step([np.array([1.0, -1.0])])
        >>> w
        array([-0.1,  0.1])
        """
        st = self._stepper
        with st._lock:
            if st.active:
                raise RuntimeError(NESTED)
            st.active = True
            try:
                self._step(grads, grad_scale)
            finally:
                st.active = False

    def _step(self, grads: Sequence[npt.NDArray[Any]] | None, grad_scale: float | None = None) -> None:
        st = self._stepper
        groups = self.param_groups
        loop = self._loop
        if self._ema_swapped:
            raise RuntimeError("the parameters hold the EMA weights (swap_ema); swap them back before stepping")
        if grad_scale is not None:
            grad_scale = _passes.check_grad_scale(grad_scale)
        accumulated = grads is None
        if grads is None:
            grads, w = self._accumulated()
            grad_scale = w if grad_scale is None else grad_scale * w
        new_ema = loop.ema_decay is not None and self._ema is None
        if new_ema:
            _lowp.refuse_bf16_ema(self._params, "ema_decay")
            self._ema = [p.copy() for p in self._params]    # timm's ModelEmaV3 starts as a copy
            st.plan = None
        plan = st.plan
        key = (tuple(map(self._get_hp, groups)), tuple(map(_lowp.options, groups)))
        k = self._k
        self._pending = (k + 1, grad_scale)
        self.last_grad_norm = None
        try:
            if plan is None or key != st.key or not plan.params_match(groups):
                self._reconfigure(grads, key)
                plan = st.built
            loop.set_plan(plan, k + 1, grad_scale)
            if st.simple:
                try:
                    plan.run(grads, k)
                except _Moved:
                    self._build_plan()
                    st.built.run(grads, k)
            else:
                self._full_step(grads, k)
        except NonFiniteGradientError:
            self.last_grad_norm = st.built.last_grad_norm
            self._undo_new(new_ema)
            raise
        finally:
            if accumulated:     # stepped on, skipped or refused: the gathered gradients are spent
                self._accum_weight = 0.0
        plan = st.built
        self.last_grad_norm = plan.last_grad_norm if loop.makes_norm else None
        if plan.last_skipped:
            self.skipped_steps += 1
            self._undo_new(new_ema)
            return
        self._accum_weight = 0.0        # a step on given gradients also ends an accumulation
        self._fresh_comp.clear()
        self._k = k + 1
        if self._fresh:
            self._fresh.clear()

    def _undo_new(self, new_ema: bool) -> None:
        """After a step skipped or refused for a non-finite gradient: drop the state (and EMA)
        that step created, so that the optimizer is as it was before it."""
        for s in self._state:      # a compensation made for this step
            if id(s) in self._fresh_comp:
                s.pop(_lowp.COMP, None)
        self._fresh_comp.clear()
        if self._fresh or new_ema:
            names = self._stepper.spec.slot_names
            for i, bits in self._fresh.items():
                for j, name in enumerate(names):
                    if bits >> j & 1:
                        self._state[i].pop(name, None)
            self._fresh.clear()
            if new_ema:
                self._ema = None
            self._stepper.plan = None

    def _full_step(self, grads: Sequence[npt.NDArray[Any]], k: int) -> None:
        """A step with Python-callable schedules, per-group scalars or host work."""
        st, groups = self._stepper, self.param_groups
        if st.callables:
            st.apply_callables(k)
        if st.spec.group_state:
            st.load_group_state(groups)
        try:
            if st.spec.host is None:
                st.built.run(grads, k)
            else:
                self._run_split(grads, k)
        except _Moved:
            self._build_plan()
            if st.callables:
                st.apply_callables(k)
            if st.spec.group_state:
                st.load_group_state(groups)
            if st.spec.host is None:
                st.built.run(grads, k)
            else:
                self._run_split(grads, k)
        if st.spec.group_state:
            st.store_group_state(groups)

    def _run_split(self, grads: Sequence[npt.NDArray[Any]], k: int) -> None:
        """The C phases around the rule's host step (see Stepper.run_split)."""
        plan = self._stepper.built
        self._stepper.run_split(lambda phases, advance: plan.run(grads, k, phases=phases, advance=advance),
                                self.param_groups)

    def _run_side(self, phases: int) -> None:
        """Run side phases of the rule (passes that are not a step and read no gradient,
        ``Stepper.run_side``) over every parameter that has its state."""
        with self._stepper:
            self._side(phases)

    def _side(self, phases: int) -> None:
        """``_run_side`` with the stepper already held."""
        self._adopt_replaced_params()
        self._stepper.run_side(phases, self._params, self._state, self._group_of_params(), self._labels,
                               self.param_groups, self._k)

    def current_lr(self) -> list[float]:
        """The learning rate of each group for the next step (its schedule's value now).

        Returns
        -------
        list of float
            One learning rate per parameter group.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from etakit import schedules as S
        >>> opt = etakit.SGD([np.zeros(1)], lr=S.step(1.0, step_size=1, gamma=0.5))
        >>> opt.current_lr()
        [1.0]
        >>> opt.step([np.ones(1)]); opt.current_lr()
        [0.5]
        """
        return [value_at(g["lr"], self._k) for g in self.param_groups]

    @property
    def step_count(self) -> int:
        """Completed steps: the ``k`` at which schedules are evaluated next.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> opt = etakit.SGD([np.zeros(2)], lr=0.1)
        >>> opt.step([np.ones(2)]); opt.step([np.ones(2)]); opt.step_count
        2
        """
        return self._k

    def _reconfigure(self, grads: Sequence[npt.NDArray[Any]], key: ConfigKey) -> None:
        st = self._stepper
        for gi, g in enumerate(self.param_groups):
            self._warn_unknown(g, f"param_groups[{gi}]")
            self._freeze(g)
        key = (tuple(map(self._get_hp, self.param_groups)), tuple(map(_lowp.options, self.param_groups)))
        needs = st.needs
        st.configure(self.param_groups, self._k)
        for gi, g in enumerate(self.param_groups):
            _lowp.check_params(g, g["params"], [f"param_groups[{gi}]['params'][{j}]" for j in range(len(g["params"]))],
                               st.spec)
        if st.plan is not None and st.needs == needs and st.plan.params_match(self.param_groups) and \
                st.key is not None and key[1] == st.key[1]:
            st.bind()           # new values only: the plan still fits
            st.key = key
            return
        self._adopt_replaced_params()
        group_of = self._group_of_params()
        missing = st.missing([p.shape for p in self._params], group_of, self._state)
        if missing or st.spec.lowp:
            # allocate (or convert state to another format) only for a step that will
            # happen: check the gradients against a plan of the state as it is
            self._build_plan()
            try:
                st.built.run(grads, self._k, check_only=True)
            except BaseException:
                st.plan = None      # that plan lacks the new state: never step with it
                raise
            spec = st.spec
            for i, j in missing:
                self._state[i][spec.slot_names[j]] = spec.new_state(j, self._params[i],
                                                                    self.param_groups[group_of[i]], self._k)
                self._fresh[i] = self._fresh.get(i, 0) | (1 << j)
        if st.spec.lowp:
            self._state = [_lowp.convert(s, st.spec, _lowp.target(self.param_groups[gi], p.size), p.dtype) if s else s
                           for s, p, gi in zip(self._state, self._params, group_of)]
            for s, p, gi in zip(self._state, self._params, group_of):
                # bfloat16 parameters: the Kahan compensation, from zero, while the group asks for it
                if not _lowp.keeps_comp(p, self.param_groups[gi]):
                    s.pop(_lowp.COMP, None)
                elif _lowp.COMP not in s:
                    s[_lowp.COMP] = np.zeros(p.shape, p.dtype)
                    self._fresh_comp.add(id(s))
        self._build_plan()
        st.key = key

    def _adopt_replaced_params(self) -> None:
        """Take arrays a user put into ``param_groups[g]["params"]`` in place of the old ones.

        State is per position (as in ``state_dict``): a replacement keeps it if
        it has the old array's shape and dtype; otherwise it is refused."""
        new: list[npt.NDArray[Any]] = []
        for gi, g in enumerate(self.param_groups):
            ps = g["params"]
            if not isinstance(ps, list):
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, got {type(ps).__name__}")
            new += ps
        if len(new) == len(self._params) and all(map(operator.is_, new, self._params)):
            return
        labels = [f"param_groups[{gi}]['params'][{j}]" for gi, g in enumerate(self.param_groups)
                  for j in range(len(g["params"]))]
        if len(new) != len(self._params):
            raise ValueError(f"the parameter groups now hold {len(new)} parameters, the optimizer was built with "
                             f"{len(self._params)}; add parameters with add_param_group, or build a new optimizer")
        for i, (old, p) in enumerate(zip(self._params, new)):
            if p is old:
                continue
            _check_param(p, labels[i])
            if self._stepper.spec.matrix_only:
                _check_matrix(p, labels[i], type(self).__name__)
            if self._state[i] and (p.shape != old.shape or p.dtype != old.dtype):
                raise StateError(f"{labels[i]} was replaced by an array of shape {p.shape} and dtype {p.dtype}; "
                                 f"its optimizer state is for shape {old.shape} and dtype {old.dtype}. Build a "
                                 "new optimizer for it")
        _check_no_overlap(new, labels)
        self._params = new

    def _group_of_params(self) -> list[int]:
        return [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    def _sync_steps(self) -> None:
        if self._stepper.plan is not None:
            self._steps = self._stepper.plan.completed_steps()

    def _build_plan(self) -> None:
        self._sync_steps()
        seeds = stochastic = None
        if self._stepper.spec.lowp:
            stochastic = [_lowp.options(g)[1] for g in self.param_groups]
            seeds = _lowp.seeds(self.param_groups, self._group_of_params(), range(len(self._params)))
        plan = self._stepper.build(self._params, self._state, self._group_of_params(), self._steps, self._fresh,
                                   self._labels, seeds, stochastic, self._ema)
        plan.set_group_sizes([len(g) for g in self.param_groups])
        pending = self.__dict__.get("_pending")
        if pending is not None:
            self._loop.set_plan(plan, *pending)

    # ---- the loop's other passes ---------------------------------------
    global_clipnorm = _loop_property("global_clipnorm", """Clip the gradients to this global norm (None: no clipping).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.SGD([w], lr=1.0)
        >>> opt.global_clipnorm = 1.0
        >>> opt.step([np.array([3.0, 4.0])]); opt.last_grad_norm, w.round(6)
        (5.0, array([-0.6, -0.8]))
        """)
    norm_type = _loop_property("norm_type", """The norm clipping uses: 2.0 or inf.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> opt = etakit.SGD([np.zeros(2)], lr=1.0, global_clipnorm=1.0, norm_type=float("inf"))
        >>> opt.step([np.array([3.0, -4.0])]); opt.last_grad_norm
        4.0
        """)
    nonfinite = _loop_property("nonfinite", """What a gradient with inf or NaN does: 'raise', 'skip', 'ignore' or
        None (the default: 'raise' with clipping, else 'ignore').

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.SGD([w], lr=1.0, nonfinite="skip")
        >>> opt.step([np.array([np.nan, 1.0])]); w, opt.skipped_steps, opt.step_count
        (array([0., 0.]), 1, 0)
        """)
    ema_decay = _loop_property("ema_decay", """Decay of the EMA of the parameters (None: no EMA).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0)
        >>> opt.ema_decay = 0.5
        >>> for _ in range(3):
        ...     opt.step([np.ones(1)])
        >>> w, opt.ema         # the first update copies, then ema += 0.5 (w - ema)
        (array([-3.]), [array([-2.25])])
        """)
    ema_warmup = _loop_property("ema_warmup", """Warm the EMA's decay up as timm's ModelEmaV3 (use_warmup).

        The decay of update ``s`` after the first is ``1 - (1 + s / ema_warmup_gamma) ** -ema_warmup_power``,
        clamped to ``[ema_min_decay, ema_decay]``.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.999, ema_warmup=True)
        >>> for _ in range(2):
        ...     opt.step([np.ones(1)])
        >>> opt.ema[0].round(4)     # -1, then decay 1 - 2 ** (-2 / 3) = 0.37 towards -2
        array([-1.63])
        """)
    ema_warmup_gamma = _loop_property("ema_warmup_gamma", """ModelEmaV3's warmup_gamma.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.999, ema_warmup=True, ema_warmup_gamma=10.0)
        >>> for _ in range(2):
        ...     opt.step([np.ones(1)])
        >>> opt.ema[0].round(4)     # decay 1 - 1.1 ** (-2 / 3) = 0.0616 at the second update
        array([-1.9384])
        """)
    ema_warmup_power = _loop_property("ema_warmup_power", """ModelEmaV3's warmup_power.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.999, ema_warmup=True, ema_warmup_power=1.0)
        >>> for _ in range(2):
        ...     opt.step([np.ones(1)])
        >>> opt.ema[0].round(4)     # decay 1 - 2 ** -1 = 0.5 at the second update
        array([-1.5])
        """)
    ema_min_decay = _loop_property("ema_min_decay", """ModelEmaV3's min_decay.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.999, ema_warmup=True, ema_min_decay=0.9)
        >>> for _ in range(2):
        ...     opt.step([np.ones(1)])
        >>> opt.ema[0].round(4)     # the warmup's 0.37 raised to 0.9
        array([-1.1])
        """)
    ema_update_after_step = _loop_property("ema_update_after_step", """ModelEmaV3's update_after_step.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.5, ema_update_after_step=2)
        >>> for _ in range(4):
        ...     opt.step([np.ones(1)])
        >>> w, opt.ema       # copies of w for the first 3 updates, then ema += 0.5 (w - ema)
        (array([-4.]), [array([-3.5])])
        """)

    @property
    def ema(self) -> list[npt.NDArray[Any]] | None:
        """The exponential moving average of each parameter (a list of arrays in parameter order,
        None before the first step or without ``ema_decay``).  The arrays are the optimizer's own:
        copy them to keep a snapshot.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.5)
        >>> for _ in range(3):
        ...     opt.step([np.ones(2)])
        >>> w, opt.ema[0]          # first update copies, then ema += 0.5 (w - ema)
        (array([-3., -3.]), array([-2.25, -2.25]))
        """
        return self._ema

    def swap_ema(self) -> None:
        """Exchange the parameters' values with their EMA's, in place (call again to swap back).

        Steps are refused while the EMA weights are in the parameters.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.5)
        >>> opt.step([np.ones(1)]); opt.step([np.ones(1)])
        >>> opt.swap_ema(); w
        array([-1.5])
        >>> opt.swap_ema(); w
        array([-2.])
        """
        with self._stepper:
            if self._ema is None:
                raise RuntimeError("no EMA to swap: set ema_decay and take a step first")
            for p, e in zip(self._params, self._ema):
                t = p.copy()
                p[...] = e
                e[...] = t
            self._ema_swapped = not self._ema_swapped

    def ema_weights(self) -> _EmaWeights[Self]:
        """Context manager: the parameters hold their EMA inside the block, their own values after it.

        Returns
        -------
        context manager
            Swaps the EMA in on entry (returning the optimizer) and back on
            exit, also after an exception.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(1)
        >>> opt = etakit.SGD([w], lr=1.0, ema_decay=0.5)
        >>> opt.step([np.ones(1)]); opt.step([np.ones(1)])
        >>> with opt.ema_weights():
        ...     print(w)
        [-1.5]
        >>> w
        array([-2.])
        """
        return _EmaWeights(self)

    def accumulate(self, grads: Sequence[npt.NDArray[Any]], weight: float = 1.0) -> None:
        """Add micro-batch gradients into the optimizer's own buffers, for the next ``step()``.

        ``step()`` without gradients then steps on their weighted mean,
        ``sum(weight_i * grads_i) / sum(weight_i)`` (give the micro-batch sizes
        as weights for the mean over all examples; ``weight=1`` everywhere
        averages), and empties the buffers.  The first call after a step
        copies instead of adding, and the mean's division rides on the step
        (no pass of its own).  For the plain sum, step on it with
        ``step(grad_scale=1 / sum(weights))`` (the division then cancels).

        Parameters
        ----------
        grads : list or tuple of ndarray
            One gradient per parameter, of its shape and dtype.
        weight : float, default 1.0
            The weight of these gradients in the mean, > 0 and finite.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.SGD([w], lr=1.0)
        >>> opt.accumulate([np.array([1.0, 2.0])])
        >>> opt.accumulate([np.array([3.0, 4.0])])
        >>> opt.step(); w                                  # the mean: [2, 3]
        array([-2., -3.])
        """
        w = _passes._real(weight, "weight", 0.0, True)
        if w == float("inf"):
            raise ValueError(f"Invalid weight: {weight!r} (expected a finite number > 0)")
        with self._stepper:
            if any(map(_lowp.is_bf16, self._params)):
                raise ValueError("accumulate: bfloat16 parameters are not supported (a bfloat16 sum of "
                                 "micro-batch gradients loses their small parts); sum them in float32 and step "
                                 "on the mean cast to bfloat16")
            grads = self._check_accumulated(grads)
            first = self._accum_weight == 0.0 or self._accum is None or len(self._accum) != len(self._params)
            if self._accum is None or len(self._accum) != len(self._params) or \
                    any(a.shape != p.shape or a.dtype != p.dtype for a, p in zip(self._accum, self._params)):
                self._accum = [np.empty_like(p) for p in self._params]
            # one threaded C pass over every buffer (a non-contiguous gradient through a copy)
            _core.accumulate(self._accum, [np.ascontiguousarray(g) for g in grads], w, first)
            self._accum_weight = w if first else self._accum_weight + w

    def _check_accumulated(self, grads: Any) -> Sequence[npt.NDArray[Any]]:
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list or tuple of arrays, one per parameter; got {type(grads).__name__}")
        if len(grads) != len(self._params):
            raise ValueError(f"expected {len(self._params)} gradients (one per parameter), got {len(grads)}")
        for i, (g, p) in enumerate(zip(grads, self._params)):
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a numpy.ndarray, got {type(g).__name__}")
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] is {g.dtype} {g.shape}, expected {p.dtype} {p.shape} "
                                 f"(the parameter {self._labels[i]})")
        return grads

    def _accumulated(self) -> tuple[list[npt.NDArray[Any]], float]:
        if self._accum is None or self._accum_weight == 0.0:
            raise ValueError("step() without gradients steps on those gathered by accumulate(); none were "
                             "gathered since the last step")
        return list(self._accum), self._accum_weight

    # ---- state ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain Python values and numpy arrays.

        Schedules appear in their ``to_dict()`` form; Python callables as
        themselves.  Arrays are copies, so the dict is a snapshot that later
        steps do not change; ``etakit.save`` writes it to a file.

        Returns
        -------
        dict
            ``{"state": {index: {"step": int, <buffer name>: ndarray}},
            "param_groups": [{<hyperparameters>, "params": [indices]}],
            "step_count": int}``, with parameters numbered in group order, as
            in PyTorch; and ``"loop": {"skipped_steps", "ema"}`` when steps
            were skipped or an EMA is kept.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(3, dtype=np.float32)
        >>> opt = etakit.Adam([w])
        >>> opt.step([np.ones(3, dtype=np.float32)])
        >>> sd = opt.state_dict()
        >>> sd["state"][0]["step"], sorted(sd["state"][0])
        (1, ['exp_avg', 'exp_avg_sq', 'step'])
        """
        with self._stepper._lock:
            self._sync_steps()
            state: dict[int, dict[str, Any]] = {}
            for i, st in enumerate(self._state):
                if st or self._steps[i]:
                    entry = {"step": int(self._steps[i])}
                    entry.update((k, v.copy()) for k, v in st.items())
                    state[i] = entry
            groups: list[Group] = []
            start = 0
            for g in self.param_groups:
                d = {k: _encode(v) for k, v in g.items() if k != "params"}
                d["params"] = list(range(start, start + len(g["params"])))
                start += len(g["params"])
                groups.append(d)
            out: dict[str, Any] = {"state": state, "param_groups": groups, "step_count": self._k}
            if self._ema is not None or self.skipped_steps:
                out["loop"] = {"skipped_steps": self.skipped_steps,
                               "ema": None if self._ema is None else
                               [(e if not self._ema_swapped else p).copy() for e, p in zip(self._ema, self._params)]}
            return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the run continues bit-identically.

        Everything is checked before anything changes: group and parameter
        counts, hyperparameters, state names, shapes and step counts.

        Parameters
        ----------
        state_dict : dict
            A :meth:`state_dict` of an optimizer of the same class over
            parameters of the same shapes (or a reference implementation's
            state dict of the same layout).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(3)
        >>> opt = etakit.Adam([w])
        >>> opt.step([np.ones(3)])
        >>> opt2 = etakit.Adam([w.copy()])
        >>> opt2.load_state_dict(opt.state_dict())
        >>> opt2.state_dict()["state"][0]["step"]
        1
        """
        with self._stepper:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict: Any) -> None:
        spec = self._stepper.spec
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict) or \
                not set(state_dict) <= {"state", "param_groups", "step_count", "loop"}:
            got = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError("state_dict must be a dict with the keys 'state', 'param_groups' "
                             f"and optionally 'step_count' and 'loop'; got {got}")
        if self._ema_swapped:
            raise RuntimeError("the parameters hold the EMA weights (swap_ema); swap them back before loading")
        skipped, ema = self._loaded_loop(state_dict.get("loop"))
        step_count = _step_value(state_dict.get("step_count", 0), "loaded step_count")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)):
            raise ValueError(f"loaded 'param_groups' must be a list of group dicts, got {type(groups).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        new_groups: list[Group] = []
        packed: list[bytes] = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            where = f"loaded param_groups[{gi}]"
            if not isinstance(theirs, dict) or "params" not in theirs:
                raise ValueError(f"{where} is not a parameter-group dict with a 'params' entry")
            ps = theirs["params"]
            if not isinstance(ps, (list, tuple)):
                raise ValueError(f"{where}['params'] must be a list of parameter indices, got {type(ps).__name__}")
            if len(ps) != len(mine["params"]):
                raise ValueError(f"{where} has {len(ps)} parameters, this optimizer's has {len(mine['params'])}")
            missing = [k for k in spec.kernel_keys if k not in theirs]
            if missing:
                raise ValueError(f"{where} lacks {missing}; a {type(self).__name__} group has "
                                 f"{list(spec.keys)} (was it saved by another optimizer?)")
            g = _lowp.adapt_loaded_group({k: _decode(v) for k, v in theirs.items() if k != "params"},
                                         mine["params"])
            g["params"] = mine["params"]
            packed.append(spec.pack(g, where, step_count))
            _lowp.check_params(g, g["params"], [f"{where}['params'][{j}]" for j in range(len(g["params"]))], spec)
            new_groups.append(g)
        if not isinstance(state, dict):
            raise ValueError("loaded 'state' must be a dict {parameter index: {name: value}}")
        allowed = set(spec.state_names)
        new_state: list[State] = [{} for _ in self._params]
        new_steps = [0] * len(self._params)
        group_of = self._group_of_params()
        for key, entry in state.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) or \
                    not 0 <= key < len(self._params):  # type: ignore[operator]  # typeshed's Integral: no __ge__
                raise ValueError(f"loaded state has an entry for parameter {key!r}; "
                                 f"expected indices 0..{len(self._params) - 1}")
            if not isinstance(entry, dict):
                raise ValueError(f"loaded state[{key}] must be a dict")
            p = self._params[key]
            if spec.lowp:
                _lowp.check_loaded(entry, spec, p.shape, f"loaded state[{key}]")
            for name, v in entry.items():
                if spec.lowp and name.endswith("_absmax") and name[:-7] in allowed:
                    new_state[key][name] = np.array(v, dtype=np.float32, order="C", copy=True)
                elif name == "step":
                    new_steps[key] = _step_value(v, f"loaded state[{key}]['step']")
                elif name == _lowp.COMP and spec.lowp:
                    # the Kahan compensation of a bfloat16 parameter (dropped for a parameter of another
                    # dtype, which has nothing to compensate)
                    if _lowp.is_bf16(p):
                        new_state[key][name] = _lowp.loaded_comp(v, p, f"loaded state[{key}][{name!r}]")
                elif name in allowed:
                    j = spec.slot_names.index(name)
                    if not spec.slot_applies(j, p.shape):
                        raise StateError(f"loaded state[{key}][{name!r}] is not state of {self._labels[key]} "
                                         f"(shape {p.shape}) for {type(self).__name__}")
                    a = np.asarray(v)
                    scalar = spec.slots[j]["shape"] == "scalar"
                    shape = spec.slot_shape(j, p.shape, new_groups[group_of[key]])
                    a = spec.loaded_state(j, a, shape, f"loaded state[{key}][{name!r}]",
                                          f" (for {self._labels[key]} of shape {p.shape})")
                    if spec.lowp and not scalar and (a.dtype == np.uint8 or a.dtype == _lowp.bfloat16()):
                        new_state[key][name] = np.array(a, order="C", copy=True)    # converted below
                        continue
                    if a.dtype.kind != "f":
                        raise TypeError(f"loaded state[{key}][{name!r}] has dtype {a.dtype}; "
                                        "expected a floating-point array")
                    new_state[key][name] = np.array(a, dtype=np.float64 if scalar else _lowp.full_dtype(p.dtype),
                                                    order="C", copy=True)
                else:
                    raise ValueError(f"loaded state[{key}] has an unknown entry {name!r}; "
                                     f"{type(self).__name__} keeps {sorted(allowed)} and 'step'")
        group_of = self._group_of_params()
        if spec.lowp:   # into the loaded groups' state formats (a float32 checkpoint into bfloat16, ...)
            for i, p in enumerate(self._params):
                if new_state[i]:
                    new_state[i] = _lowp.convert(new_state[i], spec, _lowp.target(new_groups[group_of[i]], p.size),
                                                 p.dtype)
        for i in range(len(self._params)):
            if new_steps[i] or new_state[i]:
                lacking = spec.lacking(packed[group_of[i]], self._params[i].shape, new_state[i], self._lazy_state)
                if lacking:
                    raise StateError(f"loaded state[{i}] lacks {lacking}, which {type(self).__name__} keeps for "
                                     f"{self._labels[i]} after a step (was it saved by another optimizer?)")
        for mine, g in zip(self.param_groups, new_groups):
            mine.clear()
            mine.update(g)
        self._state, self._steps = new_state, new_steps
        self._k = step_count
        self.skipped_steps = skipped
        if ema is not None or self._loop.ema_decay is None:
            self._ema = ema
        else:       # a checkpoint without an EMA into an optimizer with one: it starts anew
            self._ema = None
        self._fresh = {}
        self._fresh_comp = set()   # ids of state dicts whose Kahan compensation this step made
        self._stepper.plan = None
        self._stepper.key = None

    def _loaded_loop(self, loop: Any) -> tuple[int, list[npt.NDArray[Any]] | None]:
        """The checked "loop" entry of a loaded state dict: (skipped_steps, EMA arrays or None)."""
        if loop is None:
            return 0, None
        if not isinstance(loop, dict) or not set(loop) <= {"skipped_steps", "ema"}:
            raise ValueError("loaded 'loop' must be a dict with 'skipped_steps' and 'ema'")
        skipped = _step_value(loop.get("skipped_steps", 0), "loaded loop['skipped_steps']")
        ema = loop.get("ema")
        if ema is None:
            return skipped, None
        if not isinstance(ema, (list, tuple)) or len(ema) != len(self._params):
            raise ValueError(f"loaded loop['ema'] must be a list of {len(self._params)} arrays (one per parameter)")
        _lowp.refuse_bf16_ema(self._params, "loaded loop['ema']")
        out: list[npt.NDArray[Any]] = []
        for i, (e, p) in enumerate(zip(ema, self._params)):
            a = np.asarray(e)
            if a.shape != p.shape or a.dtype.kind != "f":
                raise StateError(f"loaded loop['ema'][{i}] is {a.dtype} {a.shape}; expected a floating array of "
                                 f"shape {p.shape} (the EMA of {self._labels[i]})")
            out.append(np.array(a, dtype=p.dtype, order="C", copy=True))
        return skipped, out

    # ---- copying ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        with self._stepper._lock:
            self._sync_steps()
            d = dict(self.__dict__)
        del d["_stepper"], d["_get_hp"]
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._fresh_comp = set()
        self._stepper = Stepper(RuleSpec.of(type(self)))
        self._get_hp = operator.itemgetter(*self._stepper.spec.keys)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


from ._core import _Moved  # noqa: E402  (after the class, which does not need it at import)


class _SwapsEma(Protocol):
    def swap_ema(self) -> None: ...


_O = TypeVar("_O", bound=_SwapsEma)


class _EmaWeights(Generic[_O]):
    """``Optimizer.ema_weights()`` (and etakit.torch's): swap in on entry, back on exit (also after an exception)."""

    def __init__(self, opt: _O) -> None:
        self.opt = opt

    def __enter__(self) -> _O:
        self.opt.swap_ema()
        return self.opt

    def __exit__(self, *exc: object) -> None:
        self.opt.swap_ema()


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------- rules

class SGD(Optimizer):
    """Stochastic gradient descent with momentum and Nesterov momentum.

    Same update, arguments and defaults as ``torch.optim.SGD``::

        g = -grad if maximize else grad;  g += weight_decay * p
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf   (when momentum != 0)
        p -= lr * g

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    momentum : float or schedule, default 0
        Momentum factor (0: none).
    dampening : float, default 0
        Dampening of the momentum: the gradient enters the buffer times ``1 - dampening``.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.step([2 * w])     # gradient of |w|^2
    >>> np.round(w, 4)
    array([ 0.46, -0.46])
    """

    rule = "sgd"
    _lazy_state = ("momentum_buffer",)   # torch.optim.SGD creates it from the gradient when missing
    _torch_step = None

    def __init__(self, params: Params, lr: Scheduled = 1e-3, momentum: Scheduled = 0.0, dampening: float = 0.0,
                 weight_decay: Scheduled = 0.0, nesterov: bool = False, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))


class Adam(Optimizer):
    """Adam, with PyTorch's update, arguments and defaults (``torch.optim.Adam``).

    ::

        g = -grad if maximize else grad
        g += weight_decay * p   (or, decoupled_weight_decay: p *= 1 - lr * weight_decay, as AdamW)
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  vmax = max(vmax, v) if amsgrad
        p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    amsgrad : bool, default False
        Divide by the running maximum of ``v`` (AMSGrad).
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).
    decoupled_weight_decay : bool, default False
        Decay the parameters instead (AdamW).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -2.0], dtype=np.float32)
    >>> opt = etakit.Adam([w], lr=0.5)
    >>> for _ in range(100):
    ...     opt.step([2 * w])
    >>> bool(np.abs(w).max() < 0.1)
    True
    """

    rule = "adam"
    _tuples = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, amsgrad: bool = False, maximize: bool = False,
                 decoupled_weight_decay: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam update, ``p *= 1 - lr * weight_decay``; the gradient is
    not changed.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 1e-2
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    amsgrad : bool, default False
        Divide by the running maximum of ``v`` (AMSGrad).
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.ones(2)
    >>> opt = etakit.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.step([np.zeros(2)])    # no gradient: only the decay acts
    >>> w
    array([0.95, 0.95])
    """

    _implied = {"decoupled_weight_decay": True}

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 1e-2, amsgrad: bool = False, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    """RMSprop, with PyTorch's update, arguments and defaults (``torch.optim.RMSprop``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        s = alpha s + (1 - alpha) g^2;  avg = sqrt(s - ga^2) (centered: ga = ga + (1 - alpha)(g - ga)) or sqrt(s)
        avg += eps
        buf = momentum buf + g / avg; p -= lr buf   (momentum > 0)   or   p -= lr g / avg

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
        The learning rate.
    alpha : float, default 0.99
        In [0, 1].
    eps : float, default 1e-8
        Added to the root of the average, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    momentum : float or schedule, default 0
        Momentum factor (0: none).
    centered : bool, default False
        Normalise by an estimate of the gradient's variance (``s - ga^2``) rather than ``s``.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.RMSprop([w], lr=0.01)
    >>> opt.step([w.copy()])
    >>> np.round(w, 3)
    array([ 0.9, -0.9])
    """

    rule = "rmsprop"

    def __init__(self, params: Params, lr: Scheduled = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: Scheduled = 0.0, momentum: Scheduled = 0.0, centered: bool = False,
                 maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))


class Adagrad(Optimizer):
    """Adagrad, with PyTorch's update, arguments and defaults (``torch.optim.Adagrad``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        clr = lr / (1 + (t - 1) lr_decay);  sum += g^2;  p -= clr g / (sqrt(sum) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
        The learning rate.
    lr_decay : float, default 0
        Decay of the learning rate: step t uses ``lr / (1 + (t - 1) lr_decay)``.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    initial_accumulator_value : float, default 0
        Starting value of ``sum``.
    eps : float, default 1e-10
        Added to the denominator, for numerical stability.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.Adagrad([w], lr=0.1)
    >>> opt.step([w.copy()])
    >>> np.round(w, 3)
    array([ 0.9, -0.9])
    """

    rule = "adagrad"

    def __init__(self, params: Params, lr: Scheduled = 1e-2, lr_decay: float = 0.0, weight_decay: Scheduled = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as ``pytorch_optimizer.Lion``.

    ::

        g = -grad if maximize else grad
        p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
        p -= lr * sign(m + (1 - beta1) (g - m));  m = m + (1 - beta2) (g - m)

    Lion's update has the same size for every element, so its learning rate
    is typically 3-10x smaller than AdamW's, and its weight decay larger.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-4
        The learning rate.
    betas : (float, float), default (0.9, 0.99)
        Interpolation of the update and decay of the momentum, each in [0, 1);
        ``betas[0]`` may be a schedule.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``weight_decouple``) or an L2 penalty added to the gradient.
    weight_decouple : bool, default True
        Decay the parameters (AdamW-style) rather than add to the gradient.
    fixed_decay : bool, default False
        Decoupled decay by ``weight_decay`` alone, not scaled by ``lr``.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.Lion([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])
    >>> w
    array([ 0.9, -1.9])
    """

    rule = "lion"
    reference_impl = "pytorch_optimizer.Lion"
    _tuples = {"betas": ("beta1", "beta2")}
    _group_optional = ("maximize",)
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-4, betas: tuple[Scheduled, float] = (0.9, 0.99),
                 weight_decay: Scheduled = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay,
                                      maximize=maximize))


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum, as ``torch.optim.NAdam`` (Dozat 2016).

    ::

        g = -grad if maximize else grad
        g += weight_decay * p   (or, decoupled_weight_decay: p *= 1 - lr * weight_decay, as NAdamW)
        mu_t = beta1 (1 - 0.96^(t momentum_decay) / 2);  mu_product *= mu_t
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  den = sqrt(v / (1 - beta2^t)) + eps
        p -= lr (1 - mu_t) / (1 - mu_product) * g / den + lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / den

    ``mu_product`` is per-parameter scalar state (a float64 0-d array; torch
    keeps it in its default dtype, float32 unless changed, and checkpoints
    move between the two either way).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 2e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient (decoupled: see below).
    momentum_decay : float, default 4e-3
        How fast ``mu_t`` warms up towards ``beta1``.
    decoupled_weight_decay : bool, default False
        Decay the parameters instead (NAdamW).
    maximize : bool, default False
        Keyword-only, as in torch.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -2.0], dtype=np.float32)
    >>> opt = etakit.NAdam([w], lr=0.5)
    >>> for _ in range(100):
    ...     opt.step([2 * w])
    >>> bool(np.abs(w).max() < 0.1)
    True
    >>> opt.state_dict()["state"][0]["mu_product"].dtype
    dtype('float64')
    """

    rule = "nadam"
    _tuples = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: Scheduled = 2e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))


class RAdam(Optimizer):
    """RAdam: Adam with a rectified adaptive step, as ``torch.optim.RAdam`` (Liu et al. 2020).

    ::

        g = -grad if maximize else grad
        g += weight_decay * p   (or, decoupled_weight_decay: p *= 1 - lr * weight_decay)
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2
        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        rho_t > 5:   p -= lr m / (1 - beta1^t) * sqrt(1 - beta2^t) / (sqrt(v) + eps) * r_t
                     r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        otherwise:   p -= lr m / (1 - beta1^t)

    With the default ``beta2`` the first five steps are unrectified
    (momentum SGD); with ``beta2 < 0.6`` every step is.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient (decoupled: see below).
    decoupled_weight_decay : bool, default False
        Decay the parameters instead, as AdamW.
    maximize : bool, default False
        Keyword-only, as in torch.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.RAdam([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])    # step 1 is not rectified: w -= lr * g
    >>> w
    array([ 0.95, -1.7 ])
    """

    rule = "radam"
    _tuples = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))


class Adamax(Optimizer):
    """Adamax: Adam with an infinity norm, as ``torch.optim.Adamax`` (Kingma and Ba 2015).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        m = m + (1 - beta1) (g - m);  u = max(beta2 u, |g| + eps)
        p -= lr / (1 - beta1^t) * m / u

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 2e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
        Added to ``|g|`` in the infinity norm, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    maximize : bool, default False
        Keyword-only, as in torch.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.Adamax([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])    # step 1: w -= lr * sign(g)
    >>> w
    array([ 0.9, -1.9])
    """

    rule = "adamax"
    _tuples = {"betas": ("beta1", "beta2")}

    def __init__(self, params: Params, lr: Scheduled = 2e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, *, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))


class Adan(Optimizer):
    """Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm"), as ``pytorch_optimizer.Adan``.

    ::

        g = (-grad if maximize else grad) * min(1, max_grad_norm / (|grads|_2 + eps))   (max_grad_norm > 0)
        d = g - g_prev   (first step: 0, or 2 g with maximize, as the reference)
        m = m + (1 - beta1) (g - m);  n = n + (1 - beta2) (d - n);  v = beta3 v + (1 - beta3) (g + beta2 d)^2
        den = sqrt(v) / sqrt(1 - beta3^t) + eps
        p *= 1 - lr * weight_decay                                  (weight_decouple)
        p -= lr / (1 - beta1^t) * m / den + lr * beta2 / (1 - beta2^t) * n / den
        p /= 1 + lr * weight_decay                                  (otherwise: proximal decay)

    State: ``exp_avg`` (m), ``exp_avg_diff`` (n), ``exp_avg_sq`` (v) and
    ``previous_grad`` (``-g``, negated as the reference keeps it).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float, float), default (0.98, 0.92, 0.99)
        Decay of the gradient, gradient-difference and second moments, each
        in [0, 1); ``betas[0]`` may be a schedule.  (The reference also takes
        ``betas[2] == 1``, which divides by zero.)
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``weight_decouple``) or proximal.
    weight_decouple : bool, default False
        Decay the parameters before the update (AdamW-style) instead of
        dividing them by ``1 + lr * weight_decay`` after it.
    max_grad_norm : float, default 0
        When > 0, scale the gradients down to this global L2 norm (never
        up).  The norm is taken over the gradients of every group with
        ``max_grad_norm > 0`` together, in double precision, each group
        with its own ``max_grad_norm`` and ``eps``; the reference reads both
        from its defaults for every group and rounds the norm to float32.
        One more read of the gradients per step.
    eps : float, default 1e-8
        Added to the denominator (and to the norm ``max_grad_norm`` compares), for numerical stability.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.Adan([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])
    >>> w
    array([ 0.9, -1.9])
    """

    rule = "adan"
    reference_impl = "pytorch_optimizer.Adan"
    _tuples = {"betas": ("beta1", "beta2", "beta3")}
    _group_optional = ("maximize",)
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float, float] = (0.98, 0.92, 0.99),
                 weight_decay: Scheduled = 0.0, weight_decouple: bool = False, max_grad_norm: float = 0.0,
                 eps: float = 1e-8, maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, max_grad_norm=max_grad_norm, eps=eps,
                                      maximize=maximize))


def _check_clip_lambda(v: Any, where: str) -> None:
    if callable(v):
        raise TypeError(f"{where}: clip_lambda must be True (clip to +-step**0.25, the reference's default "
                        f"clip_lambda) or None (no clip); etakit cannot call a Python function, got {v!r}")


class ADOPT(Optimizer):
    """ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2"), as pytorch_optimizer.ADOPT.

    ::

        g = -grad if maximize else grad
        p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
        first step:  v = g^2   (and nothing else)
        later:       u = clip(g / max(sqrt(v), eps), -t^0.25, t^0.25)    (the clip with clip_lambda)
                     m = m + (1 - beta1) (u - m);  p -= lr * m;  v = beta2 v + (1 - beta2) g^2

    The gradient is normalised by the second moment of the earlier steps,
    not including its own.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.9999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    clip_lambda : True or None, default True
        True clips the normalised gradient to ``+-t ** 0.25`` at step ``t``
        (the reference's default ``clip_lambda``); None does not clip.  The
        reference takes any function of the step; etakit runs these two.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``weight_decouple``) or an L2 penalty added to the gradient.
    weight_decouple : bool, default False
        Decay the parameters (AdamW-style) rather than add to the gradient.
    fixed_decay : bool, default False
        Decoupled decay by ``weight_decay`` alone, not scaled by ``lr``.
    eps : float, default 1e-6
        Lower bound of ``sqrt(v)``.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.ADOPT([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])     # the first step only measures the gradient
    >>> opt.step([np.array([0.5, -3.0])])
    >>> w
    array([ 0.99, -1.99])
    """

    rule = "adopt"
    reference_impl = "pytorch_optimizer.ADOPT"
    _tuples = {"betas": ("beta1", "beta2")}
    _extra = {"clip_lambda": _check_clip_lambda}
    _none_means = {"clip_lambda": False}
    _group_optional = ("maximize", "clip_lambda")
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float] = (0.9, 0.9999),
                 clip_lambda: bool | None = True, weight_decay: Scheduled = 0.0, weight_decouple: bool = False,
                 fixed_decay: bool = False, eps: float = 1e-6, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, clip_lambda=clip_lambda, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay, eps=eps,
                                      maximize=maximize))


class AdEMAMix(Optimizer):
    """AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer"), as ``pytorch_optimizer.AdEMAMix``.

    Adam plus ``alpha`` times a slow momentum::

        g = -grad if maximize else grad
        p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  s = s + (1 - beta3_t) (g - s)
        p -= lr * (m / (1 - beta1^t) + alpha_t * s) / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    With ``t_alpha_beta3 = T``, ``alpha_t = min(t * alpha / T, alpha)`` and
    ``beta3_t`` rises from ``beta1`` to ``beta3`` over T steps (linearly in
    half-life, as the paper); otherwise they are ``alpha`` and ``beta3``.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float, float), default (0.9, 0.999, 0.9999)
        Decay of the fast momentum, the second moment (each in [0, 1)) and
        the slow momentum (in [0, 1]); ``betas[0]`` may be a schedule.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``weight_decouple``) or an L2 penalty added to the gradient.
    weight_decouple : bool, default False
        Decay the parameters (AdamW-style) rather than add to the gradient.
    fixed_decay : bool, default False
        Decoupled decay by ``weight_decay`` alone, not scaled by ``lr``.
    alpha : float, default 5
        Weight of the slow momentum.
    t_alpha_beta3 : float or None, default None
        Steps over which ``alpha`` and ``beta3`` warm up; None (or 0) for no
        warmup.  With a warmup, ``betas[0]`` and ``betas[2]`` must be > 0
        (it takes their logarithms).
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.AdEMAMix([w], lr=0.1, alpha=0.0)
    >>> opt.step([np.array([0.5, -3.0])])
    >>> np.round(w, 6)
    array([ 0.9, -1.9])
    """

    rule = "ademamix"
    reference_impl = "pytorch_optimizer.AdEMAMix"
    _tuples = {"betas": ("beta1", "beta2", "beta3")}
    _none_means = {"t_alpha_beta3": 0.0}
    _group_optional = ("maximize",)
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-3,
                 betas: tuple[Scheduled, float, float] = (0.9, 0.999, 0.9999), weight_decay: Scheduled = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, alpha: float = 5.0,
                 t_alpha_beta3: float | None = None, eps: float = 1e-8, maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay, alpha=alpha,
                                      t_alpha_beta3=t_alpha_beta3, eps=eps, maximize=maximize))


class LAMB(Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), as ``pytorch_optimizer.Lamb``.

    Adam's moments with a trust ratio per parameter tensor::

        g = c * grad, negated if maximize   (c = min(max_grad_norm / (||all grads|| + eps), 1) with pre_norm)
        m = beta1 m + (1 - beta1 if grad_averaging else 1) g;  v = beta2 v + (1 - beta2) g^2
        p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)
        s = lr / (1 - beta1^t)   (lr with adam_debias; times RAdam's rectification with rectify)
        u = m / (sqrt(v) + eps)   (+ weight_decay p when not weight_decouple)
        r = min(||p||, 10) / (||u|| + eps)   (1 if either norm is 0, or with adam)
        p -= s r u

    With ``rectify``, as the reference: while the variance estimate is too
    short (``n_sma < n_sma_threshold``), no update (or, with
    ``degenerated_to_sgd``, ``u = m``); the norm in the trust ratio is that
    of ``p - s u`` (the reference's), and L2 weight decay is not applied.
    The default step size divides by ``1 - beta1^t`` but ``v`` is not
    bias-corrected, as in the reference.

    Norms are computed in double over fixed blocks (reproducible whatever
    the thread count).  Two passes over memory per step (the moments and the
    norms, then the update; one with ``adam``), plus a read of the gradients
    with ``pre_norm``.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``weight_decouple``) or added to the update ``u``.
    weight_decouple : bool, default True
        Decay the parameters rather than add ``weight_decay * p`` to the update.
    fixed_decay : bool, default False
        Decoupled decay by ``weight_decay`` alone, not scaled by ``lr``.
    rectify : bool, default False
        RAdam's rectified step size.
    degenerated_to_sgd : bool, default False
        With ``rectify``: an SGD-like step (``u = m``) before the rectification applies.
    n_sma_threshold : int, default 5
        With ``rectify``: the length of the variance estimate from which it applies (>= 4).
    grad_averaging : bool, default True
        The gradient enters the first moment times ``1 - beta1`` (else times 1).
    max_grad_norm : float, default 1.0
        With ``pre_norm``: the gradients are scaled down to this joint norm (0: not scaled).
    adam : bool, default False
        Trust ratio 1 (Adam without bias correction of ``v``).
    pre_norm : bool, default False
        Scale the gradients by their joint norm over all parameters (of every
        group with ``pre_norm``) before the update.
    eps : float, default 1e-6
        Added to the denominator and to the norms, for numerical stability.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).
    adam_debias : bool, default False
        Leave ``1 - beta1^t`` out of the step size (pytorch_optimizer's AdamD option).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, 4.0])
    >>> opt = etakit.LAMB([w], lr=0.01)
    >>> opt.step([np.array([1.0, -1.0])])   # a step of lr / (1 - beta1) * ||w|| along -u / ||u||
    >>> np.round(w, 4)
    array([2.6464, 4.3536])
    """

    rule = "lamb"
    _ignored_state = ("weight_norm", "adam_norm", "trust_ratio")   # written, never read, by the reference
    reference_impl = "pytorch_optimizer.Lamb"
    _tuples = {"betas": ("beta1", "beta2")}
    _group_optional = ("degenerated_to_sgd", "n_sma_threshold", "pre_norm", "maximize", "adam_debias")
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-3, betas: tuple[Scheduled, float] = (0.9, 0.999),
                 weight_decay: Scheduled = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 rectify: bool = False, degenerated_to_sgd: bool = False, n_sma_threshold: int = 5,
                 grad_averaging: bool = True, max_grad_norm: float = 1.0, adam: bool = False, pre_norm: bool = False,
                 eps: float = 1e-6, maximize: bool = False, adam_debias: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify,
                                      degenerated_to_sgd=degenerated_to_sgd, n_sma_threshold=n_sma_threshold,
                                      grad_averaging=grad_averaging, max_grad_norm=max_grad_norm, adam=adam,
                                      pre_norm=pre_norm, eps=eps, maximize=maximize, adam_debias=adam_debias))


class LARS(Optimizer):
    """LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"), as ``pytorch_optimizer.LARS``.

    SGD whose gradient, for parameters of two or more dimensions, gets weight
    decay and a trust ratio per tensor (scalars and vectors, such as biases
    and normalisation weights, take plain SGD steps without weight decay)::

        g = -grad if maximize else grad
        ndim >= 2:  r = trust_coefficient ||p|| / (||g|| + weight_decay ||p||)   (1 if ||p|| or that is 0)
                    g = (g + weight_decay p) r
        buf = momentum buf + (1 - dampening) g;  g = g + momentum buf if nesterov else buf   (momentum > 0)
        p -= lr g

    The momentum buffer starts at zero (unlike ``torch.optim.SGD``'s copy of
    the first gradient).  Norms are computed in double over fixed blocks
    (reproducible whatever the thread count).  Two passes over the parameters
    of two or more dimensions (the norms, the update), one over the others.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate.
    weight_decay : float or schedule, default 0
        Weight decay of the parameters of two or more dimensions (inside the trust ratio).
    momentum : float or schedule, default 0.9
        In [0, 1).
    dampening : float, default 0
        In [0, 1).
    trust_coefficient : float, default 1e-3
        Scales the trust ratio ``||p|| / (||g|| + weight_decay ||p||)``.
    nesterov : bool, default False
        Nesterov momentum.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([[3.0, 4.0]])
    >>> opt = etakit.LARS([w], lr=0.1, momentum=0.0, trust_coefficient=0.5)
    >>> opt.step([np.array([[0.0, 1.0]])])   # trust ratio 0.5 * 5 / 1
    >>> w
    array([[3.  , 3.75]])
    """

    rule = "lars"
    _lazy_state = ("momentum_buffer",)
    reference_impl = "pytorch_optimizer.LARS"
    _group_optional = ("maximize",)
    _torch_step = "group"

    def __init__(self, params: Params, lr: Scheduled = 1e-3, weight_decay: Scheduled = 0.0, momentum: Scheduled = 0.9,
                 dampening: float = 0.0, trust_coefficient: float = 1e-3, nesterov: bool = False,
                 maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                                      trust_coefficient=trust_coefficient, nesterov=nesterov, maximize=maximize))


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012), with PyTorch's update, arguments and defaults (``torch.optim.Adadelta``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        v = rho v + (1 - rho) g^2;  delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho u + (1 - rho) delta^2;  p -= lr * delta

    with ``v`` the state ``square_avg`` and ``u`` the state ``acc_delta``.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        Scales ``delta`` before it is applied.
    rho : float, default 0.9
        Decay of both running averages, in [0, 1].
    eps : float, default 1e-6
        Added inside both square roots, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.Adadelta([w], rho=0.0, eps=0.16)
    >>> opt.step([np.array([0.3, -0.3])])     # delta = sqrt(0 + eps) / sqrt(g^2 + eps) * g = 0.8 g
    >>> np.round(w, 6)
    array([ 0.76, -0.76])
    """

    rule = "adadelta"

    def __init__(self, params: Params, lr: Scheduled = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: Scheduled = 0.0, maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))


class ASGD(Optimizer):
    """Averaged SGD (Polyak and Juditsky 1992), with PyTorch's update, arguments and defaults (``torch.optim.ASGD``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        p *= 1 - lambd * eta;  p -= eta * g
        ax = ax + mu * (p - ax)   (or ax = p while mu == 1)
        then, after step t:  eta = lr / (1 + lambd * lr * t)^alpha;  mu = 1 / max(1, t - t0)

    ``ax`` is the running average of the parameters (the answer ASGD
    returns); ``eta`` (starting at ``lr``) and ``mu`` (starting at 1) are
    per-parameter scalars kept in the state as float64 0-d arrays.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
        The initial step size ``eta``.
    lambd : float, default 1e-4
        Decay term, >= 0 (PyTorch does not check it).
    alpha : float, default 0.75
        Power of the decay of ``eta``.
    t0 : float, default 1e6
        The step after which averaging starts.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.ASGD([w], lr=0.1, lambd=0.0, t0=0)
    >>> for _ in range(3):
    ...     opt.step([np.ones(2)])
    >>> ax = opt.state_dict()["state"][0]["ax"]  # from step 3 (mu = 1/2), the average of the iterates
    >>> np.round(w, 6), np.round(ax, 6)
    (array([ 0.7, -1.3]), array([ 0.75, -1.25]))
    """

    rule = "asgd"

    def __init__(self, params: Params, lr: Scheduled = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
                 weight_decay: Scheduled = 0.0, maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      maximize=maximize))


class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller and Braun 1993), as ``torch.optim.Rprop``.

    Each element moves by its own step size against the sign of its gradient::

        g = -grad if maximize else grad
        f = etaplus if g * prev > 0, etaminus if g * prev < 0, else 1
        step_size = clamp(step_size * f, step_size_min, step_size_max)
        g = 0 where the sign flipped (f == etaminus);  p -= sign(g) * step_size;  prev = g

    The state ``step_size`` starts at ``lr`` (later changes of ``lr`` have
    no effect, as in PyTorch); ``prev`` at 0.  ``sign`` is PyTorch's: 0 for
    0 and for NaN.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-2
        The initial step size.
    etas : (float, float), default (0.5, 1.2)
        ``(etaminus, etaplus)``, the factors that shrink and grow a step
        size: ``0 < etaminus < 1 < etaplus``.
    step_sizes : (float, float), default (1e-6, 50)
        ``(step_size_min, step_size_max)``, the bounds of a step size.
    maximize : bool, default False
        Maximise the objective instead (the gradient's sign flipped).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(2)
    >>> opt = etakit.Rprop([w], lr=0.1)
    >>> for g in ([1.0, 1.0], [1.0, -1.0], [1.0, -1.0]):
    ...     opt.step([np.array(g)])
    >>> np.round(w, 6)   # 0.1, 0.12, 0.144 down; 0.1 down, no move on the flip, 0.05 back up
    array([-0.364, -0.05 ])
    """

    rule = "rprop"
    _tuples = {"etas": ("etaminus", "etaplus"), "step_sizes": ("step_size_min", "step_size_max")}

    def __init__(self, params: Params, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), maximize: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize))


class Adafactor(Optimizer):
    """Adafactor (Shazeer and Stern 2018), with PyTorch's update, arguments and defaults (``torch.optim.Adafactor``).

    The second moment of a parameter of two or more dimensions is kept
    factored: one mean of ``g^2`` per row and one per column of its trailing
    matrix (for each matrix of the leading batch dimensions), so its state is
    ``O(rows + cols)`` instead of ``O(rows * cols)``; vectors keep it in full::

        g = -grad if maximize else grad;  w = t ** beta2_decay
        alpha = max(eps[1], RMS(p)) * min(lr, 1 / sqrt(t))
        row_var = lerp(row_var, mean(g^2, -1), w);  col_var = lerp(col_var, mean(g^2, -2), w)
        v = row_var col_var / max(mean(row_var, -2), eps[0])       (vectors: variance = lerp(variance, g^2, w))
        u = g / sqrt(max(v, eps[0]^2));  p *= 1 - lr * weight_decay
        p -= alpha / max(1, RMS(u) / d) * u

    The step is relative: ``alpha`` scales with the parameter's RMS, and
    ``lr`` caps the relative step size (it also scales the weight decay).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
        The largest relative step size.
    beta2_decay : float, default -0.8
        ``1 - beta2`` at step ``t`` is ``t ** beta2_decay``; <= 0.
    eps : (float or None, float), default (None, 1e-3)
        ``eps[0]`` guards the second moment (``None``: the machine epsilon of
        the parameter's dtype); ``eps[1]`` is the smallest parameter RMS the
        step is relative to.
    d : float, default 1.0
        Clipping threshold of the update's RMS; >= 1.
    weight_decay : float or schedule, default 0
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    maximize : bool, default False
        Keyword-only, as in PyTorch.

    Notes
    -----
    A step makes three passes over a factored parameter (the row and column
    sums, then the norms of the parameter and of the update, then the update)
    and two over a vector; every sum is formed in a fixed order, so results do
    not depend on the thread count.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.ones((2, 3))
    >>> opt = etakit.Adafactor([w], lr=0.1)
    >>> opt.step([np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])])
    >>> np.round(w, 4)
    array([[0.9228, 0.9162, 0.9148],
           [0.8332, 0.9095, 0.9387]])
    >>> st = opt.state_dict()["state"][0]
    >>> st["row_var"].shape, st["col_var"].shape      # one value per row, one per column
    ((2, 1), (1, 3))
    """

    rule = "adafactor"
    _tuples = {"eps": ("eps1", "eps2")}

    def __init__(self, params: Params, lr: Scheduled = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: Scheduled = 0.0, *,
                 maximize: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                      maximize=maximize))


def _orthogonalise(stepper: Stepper, groups: Sequence[Group]) -> None:
    """Muon's host step: each tensor's update (the work slot) replaced by its orthogonalisation."""
    for work, gi in zip(stepper.work, stepper.group_of):
        u = work["update"]
        if u is not None and u.size:
            g = groups[gi]
            zeropower_via_newtonschulz(u, g["ns_coefficients"], g["ns_steps"], g["eps"], out=u)


class Muon(Optimizer):
    """Muon (Jordan et al. 2024), as ``torch.optim.Muon``: momentum orthogonalised by Newton-Schulz iterations.

    For 2-D parameters only (the weight matrices of hidden layers); optimise
    biases, norms and embeddings with another optimizer such as AdamW.  ::

        m = lerp(m, grad, 1 - momentum)
        u = lerp(grad, m, momentum) if nesterov else m
        O = NS(u):  X = u / max(|u|_F, eps), transposed if rows > cols;
                    ns_steps times: A = X X^T;  X = a X + (b A + c A A) X     ((a, b, c) = ns_coefficients)
        p *= 1 - lr * weight_decay
        p -= lr * ratio * O,  ratio = sqrt(max(1, rows / cols))    (adjust_lr_fn None or "original")
                                  or 0.2 * sqrt(max(rows, cols))    ("match_rms_adamw")

    ``lerp`` is ``torch.lerp``.  The element-wise parts run in C, on the
    calling thread (one pass before the orthogonalisation, one after;
    parameters and momentum change only in the second); the matrix products
    run on numpy's BLAS and its threads
    (:func:`etakit.reference.zeropower_via_newtonschulz`; ``X @ X.T`` and
    ``A @ A.T``, equal to ``A @ A`` for the symmetric ``A``, are symmetric
    rank-k updates), so a step costs about ``ns_steps`` times three matrix
    products, not memory bandwidth.

    Deviation from ``torch.optim.Muon``: torch orthogonalises in bfloat16
    (``grad.bfloat16()``); etakit orthogonalises in the parameter's own dtype
    (float32 or float64), which is more accurate and, on CPUs without fast
    bfloat16 matrix units, faster.  Trajectories therefore match torch's
    within bfloat16 rounding, and match exactly (float64, rtol 1e-9) a torch
    whose bfloat16 cast is a no-op.  Stricter checks than torch's: ``eps``
    must be >= 0, ``ns_steps`` in [0, 99] (torch: < 100), and the
    coefficients finite.

    Parameters
    ----------
    params : list of ndarray or list of dict
        2-D parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
        The learning rate (scaled by the matrix shape: ``adjust_lr_fn``).
    weight_decay : float or schedule, default 0.1
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    momentum : float or schedule, default 0.95
        >= 0.
    nesterov : bool, default True
        Nesterov momentum: the update interpolates the gradient and the momentum.
    ns_coefficients : (float, float, float), default (3.4445, -4.7750, 2.0315)
        ``(a, b, c)`` of the quintic Newton-Schulz iteration.
    eps : float, default 1e-7
        Floor of the Frobenius norm that scales the update before the iterations.
    ns_steps : int, default 5
        Newton-Schulz iterations, 0 to 99.
    adjust_lr_fn : {None, "original", "match_rms_adamw"}, default None
        Scale of the learning rate by the matrix shape (None is "original").

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros((2, 3))
    >>> opt = etakit.Muon([w], lr=0.1)
    >>> opt.step([np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])])
    >>> np.round(w, 3)      # gradients of sizes 1 and 2; updates of about lr each (NS keeps them in ~[0.7, 1.2])
    array([[-0.111,  0.   ,  0.   ],
           [ 0.   ,  0.069,  0.   ]])
    """

    rule = "muon"
    _tuples = {"ns_coefficients": ("ns_a", "ns_b", "ns_c")}
    _choices = {"adjust_lr_fn": {None: 0, "original": 0, "match_rms_adamw": 1}}
    _torch_step = None
    _host_step = staticmethod(_orthogonalise)

    def __init__(self, params: Params, lr: Scheduled = 1e-3, weight_decay: Scheduled = 0.1, momentum: Scheduled = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = None,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn))


class DoG(Optimizer):
    """DoG, distance over gradients (Ivgi, Hinder and Carmon 2023), as the authors' ``dog.DoG``.

    "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule":
    plain SGD whose step size needs no learning rate.  ``x0`` is the
    parameter before its first step (the state ``init_buffer``)::

        g = grad + weight_decay * p
        first step:  rbar = reps_rel * (1 + ||p||)   (0 with init_eta);   G = ||g||^2 + eps
        later:       rbar = max(rbar, ||p - x0||);                        G = G + ||g||^2
        eta = lr * rbar / sqrt(G)     (init_eta instead, on the first step, when given)
        p -= eta * g

    The norms are over all tensors of a parameter group taken as one vector
    (as the authors' DoG does), whose ``rbar``, ``G`` and ``eta`` are kept
    in the group (``param_groups[i]["rbar"]``, ...: they appear after the
    group's first step, and travel with ``state_dict``).  With
    ``layer_wise=True`` (L-DoG, the authors' ``dog.LDoG``; also
    :class:`LDoG`) each tensor has its own step size, and its ``rbar``,
    ``G`` and ``eta`` are per-parameter state.  The authors recommend
    combining DoG with iterate averaging (not part of this optimizer).

    A step makes two passes over memory: the sums of ``g^2`` and
    ``(p - x0)^2`` (reads p, grad and x0), then the update (reads p and
    grad, writes p).  The sums are deterministic (fixed blocks, fixed
    order): results do not depend on the thread count.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    reps_rel : float, default 1e-6
        The first step's distance relative to ``1 + ||x0||`` (the paper's
        r_epsilon); the authors suggest 1e-4 for models with batch
        normalisation.  Must be > 0 unless ``init_eta`` is given.
    lr : float or schedule, default 1.0
        A multiplier of the step size (the paper's c); changing it is not
        recommended, but a schedule of it (warmup, decay) works, as with any
        etakit optimizer.  0 is allowed (a schedule may end there).
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient (it counts in ``G``).
    eps : float, default 1e-8
        Added to ``G`` at the first step.
    init_eta : float or None, default None
        The first step size, if given (> 0); ``reps_rel`` is then not used.
    layer_wise : bool, default False
        L-DoG: a step size per tensor instead of one per group.

    Notes
    -----
    A group (with ``layer_wise``, a tensor) counts as new while its ``G``
    is 0: loading a checkpoint saved before the first step, or adding a
    group, starts it with a first step.  The reference raises when ``G``
    is 0 after a step (``eps=0`` and zero gradients); etakit then takes
    ``eta = 0`` and the next step is a first step again.

    Checkpoints do not move to or from the authors' ``dog`` package: it
    keeps ``x0`` in its parameter groups (a list ``init_buffer`` per group)
    and a ``_first_step`` flag per parameter, where etakit keeps ``x0`` per
    parameter (the state ``init_buffer``, as for every etakit rule) and
    tells a first step by ``G == 0``.  The trajectories are the same.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -4.0])
    >>> opt = etakit.DoG([w])
    >>> for _ in range(300):
    ...     opt.step([2 * w])     # the gradient of |w|^2: no learning rate to choose
    >>> bool(np.abs(w).max() < 1e-9)
    True
    >>> g = opt.param_groups[0]
    >>> round(g["rbar"], 4), round(g["eta"], 4)       # the largest distance from x0, the step size
    (5.0, 0.0603)
    """

    rule = "dog"
    reference_impl = "dog.DoG"
    _torch_step = None

    def __init__(self, params: Params, reps_rel: float = 1e-6, lr: Scheduled = 1.0, weight_decay: Scheduled = 0.0,
                 eps: float = 1e-8, init_eta: float | None = None, layer_wise: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(reps_rel=reps_rel, lr=lr, weight_decay=weight_decay, eps=eps,
                                      init_eta=init_eta, layer_wise=layer_wise))


class LDoG(DoG):
    """L-DoG, layer-wise DoG (Ivgi, Hinder and Carmon 2023), as the authors' ``dog.LDoG``.

    :class:`DoG` with a step size per tensor (``layer_wise=True``)::

        per tensor:  rbar = reps_rel * (1 + ||p||) at its first step, then max(rbar, ||p - x0||)
                     G = sum of ||g||^2 over its steps (+ eps);  eta = lr * rbar / sqrt(G)
        p -= eta * g

    Each parameter's state holds ``init_buffer`` (x0) and its scalars
    ``rbar``, ``G`` and ``eta`` (float64).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    reps_rel : float, default 1e-6
        The first step's distance relative to ``1 + ||x0||``, per tensor (as
        for :class:`DoG`).  Must be > 0 unless ``init_eta`` is given.
    lr : float or schedule, default 1.0
        A multiplier of the step size (the paper's c), as for :class:`DoG`.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient (it counts in ``G``).
    eps : float, default 1e-8
        Added to ``G`` at the first step.
    init_eta : float or None, default None
        The first step size, if given (> 0); ``reps_rel`` is then not used.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> a, b = np.array([3.0, -4.0]), np.array([0.01])
    >>> opt = etakit.LDoG([a, b])
    >>> for _ in range(300):
    ...     opt.step([2 * a, 2 * b])
    >>> bool(max(np.abs(a).max(), np.abs(b).max()) < 1e-9)
    True
    >>> st = opt.state_dict()["state"]
    >>> round(float(st[0]["rbar"]), 4), round(float(st[1]["rbar"]), 4)     # each tensor's own distance from x0
    (5.0, 0.01)
    """

    reference_impl = "dog.LDoG"
    _implied = {"layer_wise": True}

    def __init__(self, params: Params, reps_rel: float = 1e-6, lr: Scheduled = 1.0, weight_decay: Scheduled = 0.0,
                 eps: float = 1e-8, init_eta: float | None = None, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, reps_rel=reps_rel, lr=lr, weight_decay=weight_decay, eps=eps, init_eta=init_eta)


class _ScheduleFree:
    """``train()`` and ``eval()`` of the schedule-free optimizers, in both front ends.

    The numpy classes derive from this class, and so do their etakit.torch
    drop-ins (``_front_end_mixins``).  The switch is one threaded C pass over
    every parameter that has its state (the rule's side phases), and a step
    in eval mode is refused, as the reference does."""

    _EVAL, _TRAIN = 1 << 1, 1 << 2   # the rule's side phases 1 and 2 (csrc/rules/schedulefree.h)

    if TYPE_CHECKING:       # what the front end's optimizer class (Optimizer, etakit.torch's drop-in) provides
        param_groups: list[Group]
        skipped_steps: int
        _k: int
        _ema_swapped: bool
        _stepper: Stepper
        rule: str           # (the schedule-free rule classes')

        def _side(self, phases: int) -> None: ...

    def step(self, *args: Any, **kwargs: Any) -> Any:
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(f"{type(self).__name__} is in eval mode (param_groups[0]['train_mode'] is False) and "
                               "cannot step: call optimizer.train() before training steps, and optimizer.eval() "
                               "before evaluating the model or saving a checkpoint")
        k, skipped = self._k, self.skipped_steps
        out = super().step(*args, **kwargs)  # type: ignore[misc]  # (the front end's step: next in the MRO)
        if self._k == k and self.skipped_steps == skipped:
            # etakit.torch with no gradient at all: nothing to update, but the reference still
            # advances every group's scalars (k, lr_max, weight_sum, scheduled_lr)
            rule = getattr(self, "_numpy", type(self)).rule
            for g in self.param_groups:
                group_step(rule, g, {**g, "lr": value_at(g["lr"], k)})
        return out

    def train(self) -> None:
        """Train mode: the parameters hold y, the point gradients are taken at (steps are allowed).

        Each group in eval mode moves its parameters from x back to y, ``p = lerp(p, z, 1 - beta1)``
        (one C pass, threaded); groups already in train mode are left as they are.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.ScheduleFreeSGD([w], lr=0.1)
        >>> opt.train()
        >>> opt.param_groups[0]["train_mode"]
        True
        """
        self._switch(True)

    def eval(self) -> None:
        """Eval mode: the parameters hold x, the average to evaluate and save (steps are refused).

        Each group in train mode moves its parameters from y to x, ``p = lerp(p, z, 1 - 1/beta1)``
        (one C pass, threaded); groups already in eval mode are left as they are.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.ScheduleFreeSGD([w], lr=0.1)
        >>> opt.train(); opt.step([np.ones(2)]); opt.step([np.ones(2)])
        >>> w                      # y
        array([-0.155, -0.155])
        >>> opt.eval(); w          # x, the average of the z's
        array([-0.15, -0.15])
        >>> opt.train(); w
        array([-0.155, -0.155])
        """
        self._switch(False)

    def _switch(self, train: bool) -> None:
        if self._ema_swapped:
            raise RuntimeError("the parameters hold the EMA weights (swap_ema); swap them back before switching "
                               "between train and eval")
        with self._stepper:
            groups = self.param_groups
            if any(bool(g["train_mode"]) != train for g in groups):
                self._side(self._TRAIN if train else self._EVAL)
            for g in groups:
                g["train_mode"] = train


_SF_GROUP = dict(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class ScheduleFreeAdamW(_ScheduleFree, Optimizer):
    """Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as ``schedulefree.AdamWScheduleFree``.

    No learning-rate schedule to tune: the parameters hold ``y``, a point
    between the base iterate ``z`` (state ``z``) and the average ``x`` of the
    z's, which is where the model is evaluated.  Call :meth:`train` before
    training steps and :meth:`eval` before evaluating or saving (the
    parameters then hold x); a new optimizer is in eval mode, and a step in
    eval mode raises RuntimeError, as in the reference.  Per step, with ``k``
    steps taken by the group::

        lr_t = lr * min(1, (k + 1) / warmup_steps);  lr_max = max(lr_max, lr_t)
        weight = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight;  c = weight / weight_sum
        v = beta2 v + (1 - beta2) g^2;  g = g / (sqrt(v / (1 - beta2^(k+1))) + eps) + weight_decay * y
        y = lerp(y, z, c) + lr_t (beta1 (1 - c) - 1) g;  z = z - lr_t g
        eval(): p = lerp(p, z, 1 - 1/beta1)  (y -> x);   train(): p = lerp(p, z, 1 - beta1)  (x -> y)

    The group's scalars ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``
    (lr_t, for logging) and ``train_mode`` live in ``param_groups``, as in
    the reference, so checkpoints move both ways in either mode.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 0.0025
        A schedule is evaluated at the optimizer's step count and then
        multiplied by the warmup factor ``min(1, (k + 1) / warmup_steps)``:
        use one or the other (a schedule with its own warmup and
        ``warmup_steps=0``, or a constant ``lr`` with ``warmup_steps``).  The
        largest ``lr_t`` so far (``lr_max``) weights the average.
    betas : (float, float), default (0.9, 0.999)
        ``beta1`` in (0, 1] places y between z and x; ``beta2`` in [0, 1)
        averages the squared gradients.
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty, taken at y.
    warmup_steps : int, default 0
        Linear warmup of ``lr`` over this many steps.
    r : float, default 0
        Polynomial weighting of the average: step k weighs ``(k + 1)^r``.
    weight_lr_power : float, default 2
        The average weighs each step by ``lr_max^weight_lr_power`` too (0: no
        weighting).  At least 0: the reference divides by zero for a negative
        power while ``lr_max`` is 0.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.ScheduleFreeAdamW([w], lr=0.1)
    >>> opt.train()
    >>> for _ in range(200):
    ...     opt.step([2 * w])      # gradient of |w|^2
    >>> opt.eval()                 # evaluate at x, the average
    >>> bool(np.abs(w).max() < 0.05)
    True
    """

    rule = "schedulefree_adamw"
    reference_impl = "schedulefree.AdamWScheduleFree"
    _tuples = {"betas": ("beta1", "beta2")}
    _torch_step = None
    _implied = _SF_GROUP
    _front_end_mixins = (_ScheduleFree,)

    def __init__(self, params: Params, lr: Scheduled = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power))


class ScheduleFreeSGD(_ScheduleFree, Optimizer):
    """Schedule-Free SGD (Defazio et al. 2024), as ``schedulefree.SGDScheduleFree``.

    :class:`ScheduleFreeAdamW` without the second moment; ``momentum`` plays
    the part of ``beta1``::

        lr_t = lr * min(1, (k + 1) / warmup_steps);  lr_max = max(lr_max, lr_t)
        weight = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight;  c = weight / weight_sum
        g = g + weight_decay * y
        y = lerp(y, z, c) + lr_t (momentum (1 - c) - 1) g;  z = z - lr_t g
        eval(): p = lerp(p, z, 1 - 1/momentum);   train(): p = lerp(p, z, 1 - momentum)

    Call :meth:`train` before training steps and :meth:`eval` before
    evaluating or saving; a step in eval mode (a new optimizer is in eval
    mode) raises RuntimeError, as in the reference.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        As for :class:`ScheduleFreeAdamW` (times the warmup factor).
    momentum : float, default 0.9
        In (0, 1).
    weight_decay : float or schedule, default 0
        L2 penalty, taken at y.
    warmup_steps : int, default 0
        Linear warmup of ``lr`` over this many steps.
    r : float, default 0
        Polynomial weighting of the average: step k weighs ``(k + 1)^r``.
    weight_lr_power : float, default 2
        As for :class:`ScheduleFreeAdamW`.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.ScheduleFreeSGD([w], lr=0.1)
    >>> opt.train()
    >>> for _ in range(100):
    ...     opt.step([2 * w])
    >>> opt.eval()
    >>> bool(np.abs(w).max() < 0.05)
    True
    """

    rule = "schedulefree_sgd"
    reference_impl = "schedulefree.SGDScheduleFree"
    _torch_step = None
    _implied = _SF_GROUP
    _front_end_mixins = (_ScheduleFree,)

    def __init__(self, params: Params, lr: Scheduled = 1.0, momentum: float = 0.9, weight_decay: Scheduled = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps,
                                      r=r, weight_lr_power=weight_lr_power))


class ScheduleFreeRAdam(_ScheduleFree, Optimizer):
    """Schedule-Free RAdam, as ``schedulefree.RAdamScheduleFree``.

    :class:`ScheduleFreeAdamW` whose warmup is RAdam's rectification instead
    of ``warmup_steps``: with ``rho_inf = 2 / (1 - beta2) - 1`` and
    ``rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)`` (``t = k + 1``),
    ``lr_t = lr * sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``
    and the gradient is divided by its second moment while ``rho_t > 4``;
    before that (the first 4 steps at ``beta2 = 0.999``) ``lr_t`` is 0 with
    ``silent_sgd_phase`` (the second moment is still averaged, nothing else
    moves) or ``lr`` (plain schedule-free SGD steps) without.

    Call :meth:`train` before training steps and :meth:`eval` before
    evaluating or saving; a step in eval mode (a new optimizer is in eval
    mode) raises RuntimeError, as in the reference.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 0.0025
        A schedule's value is multiplied by the rectification.
    betas : (float, float), default (0.9, 0.999)
        ``beta1`` in (0, 1], ``beta2`` in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, for numerical stability.
    weight_decay : float or schedule, default 0
        L2 penalty, taken at y.
    r : float, default 0
        Polynomial weighting of the average: step k weighs ``(k + 1)^r``.
    weight_lr_power : float, default 2
        As for :class:`ScheduleFreeAdamW`.
    silent_sgd_phase : bool, default True
        Before the rectification applies, leave the parameters still (else take plain schedule-free SGD steps).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.ScheduleFreeRAdam([w], lr=0.1)
    >>> opt.train()
    >>> opt.step([2 * w]); w            # silent SGD phase: nothing moves yet
    array([ 1., -2.])
    >>> for _ in range(500):
    ...     opt.step([2 * w])
    >>> opt.eval()
    >>> bool(np.abs(w).max() < 0.05)
    True
    """

    rule = "schedulefree_radam"
    reference_impl = "schedulefree.RAdamScheduleFree"
    _tuples = {"betas": ("beta1", "beta2")}
    _torch_step = None
    _implied = _SF_GROUP
    _front_end_mixins = (_ScheduleFree,)
    _torch_example = "lr=0.1, silent_sgd_phase=False"   # the default's first steps move nothing

    def __init__(self, params: Params, lr: Scheduled = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, r: float = 0.0, weight_lr_power: float = 2.0,
                 silent_sgd_phase: bool = True, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, r=r,
                                      weight_lr_power=weight_lr_power, silent_sgd_phase=silent_sgd_phase))


# ---- learning-rate-free rules: a step size d adapted from sums over every tensor of the step

def _check_fsdp_in_use(v: Any, where: str) -> None:
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1)):
        if v:
            raise HyperparameterError(f"Invalid fsdp_in_use for {where}: True (etakit steps the tensors of one "
                                      "process: fully sharded parameters (FSDP) are not supported; the reference "
                                      "package sums d's statistics across processes)", None, "fsdp_in_use", v)
        return
    raise TypeError(f"{where}: fsdp_in_use must be a bool, got {type(v).__name__} {v!r}")


def _check_log_every(v: Any, where: str) -> None:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{where}: log_every must be an integer (accepted and ignored: etakit does not log), "
                        f"got {type(v).__name__} {v!r}")


def _check_d0(v: Any, where: str) -> None:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}: d0 must be a real number, got {type(v).__name__} {v!r}")
    if not (0.0 < v < float("inf")):  # type: ignore[operator]  # typeshed's numbers.Real has no __gt__
        raise HyperparameterError(f"Invalid d0 for {where}: {v!r} (expected a finite number > 0)", None, "d0", v)


class Prodigy(Optimizer):
    """Prodigy (Mishchenko and Defazio 2024), as ``prodigyopt.Prodigy`` 1.1.2: Adam with a learned step size.

    No learning rate to choose: the step size ``d`` starts tiny (``d0``) and
    grows, each step, to an estimate of the distance from the initial
    parameters ``p0`` to a solution.  ``lr`` is a multiplier of it (leave it
    at 1; a schedule on it, such as cosine decay, works as with Adam).  ::

        g = grad + weight_decay p   (decouple=False)
        dlr = d lr bc,   bc = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) (use_bias_correction) or 1
        s = beta3 s + (d / d0) (d if safeguard_warmup else dlr) g           (every slice_p-th element)
        d_numerator = beta3 d_numerator + (d / d0) dlr <g, p0 - p>
        d_hat = d_coef d_numerator / |s|_1;  d_max = max(d_max, d_hat);  d' = min(d_max, d growth_rate)
        exp_avg = beta1 exp_avg + d (1 - beta1) g;  exp_avg_sq = beta2 exp_avg_sq + d^2 (1 - beta2) g^2
        p -= weight_decay dlr p   (decouple=True);   p -= dlr exp_avg / (sqrt(exp_avg_sq) + d' eps)

    with sums over every parameter of every group.  ``d`` and its companions
    ``d_max``, ``d_numerator``, ``k`` (steps taken), ``d_denom`` and
    ``d_hat`` are kept in each parameter group, as the reference keeps them,
    so checkpoints move between the two either way; all groups share them.
    The sums are formed in double over fixed blocks in a fixed order
    (bit-identical for any thread count), inside the step's one parallel
    region: two passes over memory per step.

    Differences from the reference, all refusals of what it silently ignores
    or cannot run: a group's ``lr`` must be the largest group ``lr`` or 0 (as
    the reference requires); ``betas``, ``beta3``, ``d_coef``,
    ``growth_rate``, ``decouple`` and ``use_bias_correction`` must be the
    same in every group (the reference reads the first group's);
    ``fsdp_in_use=True`` is refused.  ``slice_p`` cannot change once the
    state exists.  The reference adds the weight decay into ``p.grad``;
    etakit leaves the gradient as it is.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        Multiplier of the adapted step size, >= 0 (0 in a group: its
        statistics stand still).
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0] == 0`` keeps no ``exp_avg``.
    beta3 : float or None, default None
        Decay of ``s`` and ``d_numerator``; None is ``sqrt(betas[1])``.
    eps : float, default 1e-8
        > 0; scaled by ``d`` in the denominator.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``decouple``) or an L2 penalty added to the gradient.
    decouple : bool, default True
        Decay the parameters (AdamW-style) rather than add to the gradient.
    use_bias_correction : bool, default False
        Adam's bias correction of the step size (``bc`` above).
    safeguard_warmup : bool, default False
        Leave ``lr`` out of the ``s`` update (steadier under a warmup schedule).
    d0 : float, default 1e-6
        > 0: the initial step size.
    d_coef : float, default 1.0
        >= 0: scales the estimate of ``d``.
    growth_rate : float, default inf
        > 0: the most ``d`` may grow by in one step (inf: no limit).
    fsdp_in_use : bool, default False
        Must be False (no fully sharded parameters).
    slice_p : int, default 1
        >= 1: ``s`` and ``p0`` keep every ``slice_p``-th element only
        (memory for an approximation of ``d``; 11 is reasonable).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -4.0])
    >>> opt = etakit.Prodigy([w])
    >>> for _ in range(100):
    ...     opt.step([w.copy()])          # the gradient of |w|^2 / 2
    >>> float(np.round(opt.param_groups[0]["d"], 3)), opt.param_groups[0]["k"]     # d grew from 1e-6
    (1.53, 100)
    >>> np.round(w, 2)
    array([ 0.03, -0.04])
    """

    rule = "prodigy"
    reference_impl = "prodigyopt.Prodigy"
    _tuples = {"betas": ("beta1", "beta2")}
    _extra = {"fsdp_in_use": _check_fsdp_in_use}
    _group_state = {"d": "d0", "d_max": "d0", "d_numerator": 0.0, "k": 0, "d_denom": 0.0, "d_hat": 0.0}
    _constant_state = ("p0",)

    def __init__(self, params: Params, lr: Scheduled = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: Scheduled = 0.0, decouple: bool = True,
                 use_bias_correction: bool = False, safeguard_warmup: bool = False, d0: float = 1e-6,
                 d_coef: float = 1.0, growth_rate: float = float("inf"), fsdp_in_use: bool = False, slice_p: int = 1,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay,
                                      decouple=decouple, use_bias_correction=use_bias_correction,
                                      safeguard_warmup=safeguard_warmup, d0=d0, d_coef=d_coef,
                                      growth_rate=growth_rate, fsdp_in_use=fsdp_in_use, slice_p=slice_p))


_DADAPT_SHARED = """All groups share ``d`` and its companions, kept in every parameter group
    as the reference keeps them (checkpoints move between the two either
    way).  The sums are formed in double over fixed blocks in a fixed order
    (bit-identical for any thread count), inside the step's one parallel
    region.  The reference adds the L2 weight decay into ``p.grad`` in place;
    etakit leaves the gradient as it is."""


class DAdaptAdam(Optimizer):
    """D-Adapted Adam (Defazio and Mishchenko 2023), as ``dadaptation.DAdaptAdam`` 3.2.

    Adam whose step size ``d`` is learned: it starts at ``d0`` and grows to a
    lower bound of the distance from the initial parameters to a solution.
    ``lr`` is a multiplier of it (leave it at 1; it may follow a schedule);
    a group's ``layer_scale`` (a group key, default 1) scales that group's
    step.  ::

        g = grad + weight_decay p   (decouple=False)
        dlr = d lr bc,   bc = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) (use_bias_correction) or 1
        num = sum of layer_scale dlr <g, s / (sqrt(exp_avg_sq) + eps)>
        exp_avg = beta1 exp_avg + layer_scale dlr (1 - beta1) g;  exp_avg_sq = beta2 exp_avg_sq + (1 - beta2) g^2
        s = sqrt(beta2) s + dlr (1 - sqrt(beta2)) g
        numerator_weighted = sqrt(beta2) numerator_weighted + (1 - sqrt(beta2)) num
        d' = max(d, min(numerator_weighted / ((1 - sqrt(beta2)) sum of layer_scale |s|_1), d growth_rate))
        p -= weight_decay dlr p   (decouple=True);   p -= exp_avg / (sqrt(exp_avg_sq) + eps)

    SHARED

    Two passes over memory per step (the reference updates the parameters
    only once the sums over every tensor show some progress).

    Differences from the reference: a group's ``lr`` must be the largest
    group ``lr`` or 0 (as the reference requires); ``betas``, ``growth_rate``, ``decouple`` and
    ``use_bias_correction`` must be the same in every group (the reference
    reads the first group's); ``fsdp_in_use=True`` is refused.
    ``log_every`` is accepted and ignored (etakit does not log); ``d0`` is
    also kept in the groups (where ``d`` starts).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        Multiplier of the adapted step size, >= 0 (0 in a group: its
        statistics stand still).
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
        > 0.
    weight_decay : float or schedule, default 0
        The weight decay: decoupled (``decouple``) or an L2 penalty added to the gradient.
    log_every : int, default 0
        Accepted and ignored.
    decouple : bool, default False
        Decay the parameters (AdamW-style) rather than add to the gradient.
    use_bias_correction : bool, default False
        Adam's bias correction of the step size (``bc`` above).
    d0 : float, default 1e-6
        > 0: the initial step size.
    growth_rate : float, default inf
        > 0: the most ``d`` may grow by in one step (inf: no limit).
    fsdp_in_use : bool, default False
        Must be False (no fully sharded parameters).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -4.0])
    >>> opt = etakit.DAdaptAdam([w])
    >>> for _ in range(100):
    ...     opt.step([w.copy()])          # the gradient of |w|^2 / 2
    >>> float(np.round(opt.param_groups[0]["d"], 3)), opt.param_groups[0]["k"]     # d grew from 1e-6
    (9.772, 100)
    >>> np.round(w, 2)
    array([-0.02,  0.02])
    """

    rule = "dadapt_adam"
    reference_impl = "dadaptation.DAdaptAdam"
    _tuples = {"betas": ("beta1", "beta2")}
    _extra = {"log_every": _check_log_every, "fsdp_in_use": _check_fsdp_in_use, "d0": _check_d0}
    _implied = {"layer_scale": 1.0}
    _group_optional = ("d0",)
    _group_state = {"d": "d0", "numerator_weighted": 0.0, "k": 0}

    def __init__(self, params: Params, lr: Scheduled = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Scheduled = 0.0, log_every: int = 0, decouple: bool = False,
                 use_bias_correction: bool = False, d0: float = 1e-6, growth_rate: float = float("inf"),
                 fsdp_in_use: bool = False, **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, log_every=log_every,
                                      decouple=decouple, use_bias_correction=use_bias_correction, d0=d0,
                                      growth_rate=growth_rate, fsdp_in_use=fsdp_in_use))


class DAdaptSGD(Optimizer):
    """D-Adapted SGD (Defazio and Mishchenko 2023), as ``dadaptation.DAdaptSGD`` 3.2.

    Dual averaging with a learned step size ``d`` (starting at ``d0``;
    ``lr`` is a multiplier of it, leave it at 1; it may follow a schedule).
    ::

        g0_norm = |grad| at the first step;  dlr = d lr / g0_norm;  g = grad + weight_decay p
        numerator_weighted += dlr <g, s>;  s += dlr g
        z = x0 - s;   p = momentum p + (1 - momentum) z
        d' = max(d, min(2 numerator_weighted / |s|, d growth_rate))

    SHARED

    One pass over memory per step (the update does not depend on
    ``d'``), and one more read of the gradients at the first step.

    Differences from the reference: a group's ``lr`` must be the largest
    group ``lr`` or 0 (as the reference requires); ``momentum``,
    ``weight_decay`` and ``growth_rate`` must be the same in every group (the
    reference reads the first group's); ``fsdp_in_use=True`` is refused.
    Where the reference divides by zero (all gradients zero at the first
    step, or ``s`` all zero), etakit skips that step (it starts over at the
    next) or keeps ``d``.  ``log_every`` is accepted and ignored; ``d0`` is
    also kept in the groups (where ``d`` starts).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        Multiplier of the adapted step size, >= 0 (0 in a group: its ``s``
        stands still).
    momentum : float, default 0
        In [0, 1).
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    log_every : int, default 0
        Accepted and ignored.
    d0 : float, default 1e-6
        > 0: the initial step size.
    growth_rate : float, default inf
        > 0: the most ``d`` may grow by in one step (inf: no limit).
    fsdp_in_use : bool, default False
        Must be False (no fully sharded parameters).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -4.0])
    >>> opt = etakit.DAdaptSGD([w], momentum=0.9)
    >>> for _ in range(100):
    ...     opt.step([w.copy()])          # the gradient of |w|^2 / 2
    >>> float(np.round(opt.param_groups[0]["d"], 3)), opt.param_groups[0]["k"]
    (14.914, 100)
    >>> np.round(w, 2)
    array([-0.01,  0.01])
    """

    rule = "dadapt_sgd"
    reference_impl = "dadaptation.DAdaptSGD"
    _extra = {"log_every": _check_log_every, "fsdp_in_use": _check_fsdp_in_use, "d0": _check_d0}
    _group_optional = ("d0",)
    _group_state = {"d": "d0", "numerator_weighted": 0.0, "k": 0, "g0_norm": 0.0}

    def __init__(self, params: Params, lr: Scheduled = 1.0, momentum: float = 0.0, weight_decay: float = 0.0,
                 log_every: int = 0, d0: float = 1e-6, growth_rate: float = float("inf"), fsdp_in_use: bool = False,
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, log_every=log_every,
                                      d0=d0, growth_rate=growth_rate, fsdp_in_use=fsdp_in_use))


class DAdaptAdaGrad(Optimizer):
    """D-Adapted AdaGrad (Defazio and Mishchenko 2023), as ``dadaptation.DAdaptAdaGrad`` 3.2 (dense gradients).

    Dual averaging with AdaGrad's per-element scaling and a learned step
    size ``d`` (starting at ``d0``; ``lr`` is a multiplier of it, leave it at
    1).  The reference recommends DAdaptAdam or DAdaptSGD in most cases.  ::

        dlr = d lr;  g = grad + weight_decay p
        alphak += g^2  (from 1e-6);   sk += dlr g
        sksq_weighted = sum sk^2 / (sqrt(alphak) + eps);   skl1 = |sk|_1
        gsq_weighted += dlr^2 sum g^2 / (sqrt(alphak) + eps)
        d' = max(d, min((sksq_weighted - gsq_weighted) / skl1, d growth_rate))
        z = x0 - sk / (sqrt(alphak) + eps);   p = z,  or momentum p + (1 - momentum) z

    SHARED

    Two passes over memory per step.

    Differences from the reference: ``lr``, ``momentum`` and
    ``growth_rate`` must be the same in every group (the reference reads the
    first group's and ignores the others); sparse gradients are not
    supported; ``log_every`` is accepted and ignored; ``d0`` is also kept in
    the groups (where ``d`` starts).

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1.0
        Multiplier of the adapted step size, >= 0.
    momentum : float, default 0
        >= 0.
    log_every : int, default 0
        Accepted and ignored.
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    eps : float, default 1e-6
        > 0.
    d0 : float, default 1e-6
        > 0: the initial step size.
    growth_rate : float, default inf
        > 0: the most ``d`` may grow by in one step (inf: no limit).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -4.0])
    >>> opt = etakit.DAdaptAdaGrad([w])
    >>> for _ in range(100):
    ...     opt.step([w.copy()])          # the gradient of |w|^2 / 2
    >>> float(np.round(opt.param_groups[0]["d"], 3)), opt.param_groups[0]["k"]     # slower to grow
    (0.236, 100)
    >>> np.round(w, 2)
    array([ 2.75, -3.75])
    """

    rule = "dadapt_adagrad"
    reference_impl = "dadaptation.DAdaptAdaGrad"
    _extra = {"log_every": _check_log_every, "d0": _check_d0}
    _group_optional = ("d0",)
    _group_state = {"d": "d0", "gsq_weighted": 0.0, "sksq_weighted": 0.0, "skl1": 0.0, "k": 0}

    def __init__(self, params: Params, lr: Scheduled = 1.0, momentum: float = 0.0, log_every: int = 0,
                 weight_decay: Scheduled = 0.0, eps: float = 1e-6, d0: float = 1e-6, growth_rate: float = float("inf"),
                 **options: Unpack[OptimizerOptions]) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, log_every=log_every, weight_decay=weight_decay,
                                      eps=eps, d0=d0, growth_rate=growth_rate))


for _cls in (DAdaptAdam, DAdaptSGD, DAdaptAdaGrad):
    if _cls.__doc__ is not None:        # (None under python -OO)
        _cls.__doc__ = _cls.__doc__.replace("SHARED", _DADAPT_SHARED)
del _cls

# The keyword-only options every optimizer takes (OptimizerOptions), as each class's docstring lists them
# at the end of its Parameters section: (type, default, description).
_OPTION_DOCS = {
    "state_dtype": ('{"float32", "bfloat16", "int8"}', '"float32"',
                    ("The optimizer state's format: float32, bfloat16, or bitsandbytes' 8-bit blockwise one "
                     "(the user guide's low-precision page).")),
    "stochastic_rounding": ("bool", "False", "Round bfloat16 state (and bfloat16 parameters) stochastically."),
    "min_8bit_size": ("int", "4096", 'Parameters with fewer elements keep float32 state under ``state_dtype="int8"``.'),
    "sr_seed": ("int", "0", "The seed of the stochastic rounding."),
    "kahan": ("bool or None", "None", ("bfloat16 parameters: the update written back with a Kahan compensation "
                                       "(None: unless ``stochastic_rounding``).")),
    "global_clipnorm": ("float or None", "None", ("Clip the gradients to this global norm inside the step "
                                                  "(None: no clipping); see :meth:`etakit.Optimizer.step`.")),
    "norm_type": ("float", "2.0", "The norm of that clipping: 2 or ``inf``."),
    "nonfinite": ('{"raise", "skip", "ignore"} or None', "None",
                  'What a gradient with inf or NaN does (None: ``"raise"`` with clipping, else ``"ignore"``).'),
    "ema_decay": ("float or None", "None", ("Keep an exponential moving average of the parameters with this "
                                            "decay, as timm's ``ModelEmaV3`` (None: none); see "
                                            ":attr:`etakit.Optimizer.ema`.")),
    "ema_warmup": ("bool", "False", "Warm the EMA's decay up (``ModelEmaV3``'s ``use_warmup``)."),
    "ema_warmup_gamma": ("float", "1.0", "``ModelEmaV3``'s ``warmup_gamma``."),
    "ema_warmup_power": ("float", "2/3", "``ModelEmaV3``'s ``warmup_power``."),
    "ema_min_decay": ("float", "0.0", "``ModelEmaV3``'s ``min_decay``."),
    "ema_update_after_step": ("int", "0", "``ModelEmaV3``'s ``update_after_step``."),
}


def _with_options(doc: str | None) -> str | None:
    """A rule class's docstring with the options every optimizer takes added to its Parameters section
    (None, under python -OO, stays None)."""
    if doc is None:
        return None
    head = re.search(r"\n( *)Parameters\n\1-+\n", doc)
    if head is None:
        return doc
    indent = head.group(1)
    nxt = re.compile(rf"\n{indent}[A-Z][A-Za-z ]*\n{indent}-+\n").search(doc, head.end())
    at = nxt.start() if nxt is not None else len(doc.rstrip()) + 1
    entries = []
    for name in {**_lowp.KEYS, **_passes.KEYS}:
        kind, default, text = _OPTION_DOCS[name]
        entries.append(f"{indent}{name} : {kind}, default {default}, keyword-only\n" +
                       textwrap.fill(text, 112, initial_indent=indent + "    ", subsequent_indent=indent + "    "))
    return doc[:at].rstrip("\n") + "\n" + "\n".join(entries) + "\n" + doc[at:]


#: Every optimizer class by name, for tools that take a name (etakit.minimize, bench).
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad, Lion, NAdam, RAdam, Adamax, Adan, ADOPT, AdEMAMix,
                                  LAMB, LARS, Adadelta, ASGD, Rprop, Adafactor, Muon, DoG, LDoG, ScheduleFreeAdamW,
                                  ScheduleFreeSGD, ScheduleFreeRAdam, Prodigy, DAdaptAdam, DAdaptSGD, DAdaptAdaGrad)}

for _rule_cls in OPTIMIZERS.values():
    _rule_cls.__doc__ = _with_options(_rule_cls.__doc__)
del _rule_cls
