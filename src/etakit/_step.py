"""What every optimizer front end shares: a rule's spec and its link to the C engine.

``RuleSpec`` reads a rule's hyperparameter fields, their ranges and its state
slots from the C rule table (``etakit._core.rule_info``) and maps the group
keys of the optimizer class onto them (``betas`` -> ``beta1``, ``beta2``).
Ranges, schedulable fields and state slots are therefore described once, in
C; the Python class adds only its signature and docstring.

``Stepper`` is one optimizer's link to the engine: validating and packing the
groups, binding schedules, allocating state, building the plan (the C
descriptors) and rebuilding it when something it points at changes, the
per-optimizer lock, and, for a rule whose step has host work between its C
phases (Muon's matrix products), the split step (``run_split``).  The numpy
optimizers (``etakit.optim``) and the PyTorch drop-ins (``etakit.torch``)
each own one (composition), so both front ends run the same code.
"""
from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from . import _core, _lowp
from .errors import HyperparameterError, StateError
from .schedules import Schedule

if TYPE_CHECKING:
    from .optim import Optimizer

__all__ = ["RuleSpec", "Stepper", "is_scheduled", "value_at"]

NESTED = ("this optimizer is already stepping (or loading, or adding a group) in this thread: a schedule, "
          "closure or callback called step, add_param_group or load_state_dict of the same optimizer from "
          "inside it; do that after the step returns")

# a parameter group: {"params": [...], hyperparameter key: value, ...}
Group = dict[str, Any]
# what a plan is built from: each group's hyperparameters, and each group's low-precision options
ConfigKey = tuple[tuple[Any, ...], tuple[Any, ...]]
# a state entry of one parameter: {slot name: array} (numpy, or views of torch tensors)
State = dict[str, Any]
# a host step between a rule's C phases (Muon's): f(stepper, groups)
HostStep = Callable[["Stepper", Sequence[Group]], None]
Shape = Sequence[int]


def is_scheduled(v: object) -> bool:
    """A hyperparameter given as a schedule: built-in, or any callable f(k)."""
    return isinstance(v, Schedule) or (callable(v) and not isinstance(v, numbers.Number))


def value_at(v: Any, k: int) -> float:
    return float(v(k)) if is_scheduled(v) else float(v)


def _real(v: Any, label: str, where: str, optional: bool = False) -> float:
    what = "a real number or None" if optional else "a real number"
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{where}: {label} must be {what}, got {type(v).__name__} {v!r}")
    if isinstance(v, numbers.Real):
        try:
            return float(v)
        except OverflowError:       # an int beyond any double
            raise HyperparameterError(f"Invalid {label} for {where}: {v!r} (too large for a double)",
                                      None, label, v) from None
    # (0-d tensors, which PyTorch accepts as an lr, are turned into floats by etakit.torch; a 0-d
    # array could be changed in place behind the optimizer's back: pass a float or a schedule)
    raise TypeError(f"{where}: {label} must be {what}, got {type(v).__name__} {v!r}")


def _flag(v: Any, label: str, where: str, optional: bool = False) -> int:
    # 0 and 1 compare equal to False and True, so they are taken as such
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1)):
        return int(bool(v))
    what = "a bool or None" if optional else "a bool"
    raise TypeError(f"{where}: {label} must be {what}, got {type(v).__name__} {v!r}")


def _integer(v: Any, label: str, where: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{where}: {label} must be an integer, got {type(v).__name__} {v!r}")
    if not -2**31 <= v < 2**31:  # type: ignore[operator]  # typeshed's numbers.Integral has no __ge__
        raise ValueError(f"Invalid {label} for {where}: {v!r} (out of the range of a C int)")
    return int(v)


def _group_scalar(v: Any, name: str, where: str) -> float:
    """A per-group scalar as the C step reads it (a flag such as train_mode as 0 or 1)."""
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    return _real(v, name, where)


def _store_group_state(names: Sequence[str], groups: Sequence[Group], values: npt.NDArray[np.float64]) -> None:
    """The per-group scalars ``values`` (groups x names) into the groups; a value keeps the type
    its key had (an int step count stays an int, a bool flag a bool), as a reference's groups hold them."""
    for g, row in zip(groups, values.tolist()):
        for name, v in zip(names, row):
            if v == 0.0 and name not in g:
                continue    # still at its start (0) in a group the step did not touch: left as it was
            t: type[Any] = type(g.get(name))
            if t is not float:      # (the common case first: a step runs this for every group)
                if t is bool or issubclass(t, np.bool_):
                    v = bool(v)
                elif t is int or issubclass(t, numbers.Integral):
                    v = int(v)
            g[name] = v


class RuleSpec:
    """A rule as the C table describes it, seen through an optimizer class's group keys.

    The class declares ``rule`` (the C rule name), ``_tuples`` (group keys
    that pack several fields, ``{"betas": ("beta1", "beta2")}``), ``_extra``
    (group keys outside the C struct, ``{key: check(value, where)}``),
    ``_none_means`` (group keys whose ``None``, an Optional argument of the
    reference, stands for a value of the C field: ``{key: value}``),
    ``_choices`` (group keys whose values are names standing for a C integer,
    ``{"adjust_lr_fn": {None: 0, "original": 0, "match_rms_adamw": 1}}``),
    ``_host_step`` with ``_host_split`` (host work between the rule's C
    phases, see ``Stepper.run_split``), ``_group_state`` (where the rule's
    per-group scalars start: ``{name: a number, or the group key whose value
    it takes}``) and ``_constant_state`` (state names the reference may store
    as one 0-d value standing for the whole buffer).  Every other field of
    the C struct is the group key of the same name.
    """

    _cache: dict[type[Optimizer], RuleSpec] = {}

    @classmethod
    def of(cls, opt_cls: type[Optimizer]) -> RuleSpec:
        spec = cls._cache.get(opt_cls)
        if spec is None:
            spec = cls._cache[opt_cls] = cls(opt_cls)
        return spec

    def __init__(self, opt_cls: type[Optimizer]) -> None:
        rule = cast(str, opt_cls.rule)      # a rule class's (the base class's None: rule_info raises TypeError)
        info = _core.rule_info(rule)
        self.name = opt_cls.__name__
        self.rule = rule
        self.id: int = info["id"]
        self.fields: list[dict[str, Any]] = info["fields"]
        self.slots: list[dict[str, Any]] = info["slots"]
        self.slot_names: tuple[str, ...] = tuple(s["name"] for s in self.slots)
        self.uses_step: bool = info["uses_step"]
        self.matrix: bool = info["matrix"] or info["matrix_only"]
        self.matrix_only: bool = info["matrix_only"]      # parameters must be 2-D
        # work slots: space the step uses between its phases, not optimizer state (never saved)
        self.work = tuple(j for j, s in enumerate(self.slots) if s["init"] == "work")
        self.state_names = tuple(s["name"] for j, s in enumerate(self.slots) if j not in self.work)
        self.choices: dict[str, dict[Any, int]] = dict(opt_cls._choices)
        self.host: HostStep | None = opt_cls._host_step
        self.host_split = opt_cls._host_split
        # per-group scalars the step updates: group keys
        self.group_state: tuple[str, ...] = tuple(info["group_state"])
        self.group_state_init = dict(opt_cls._group_state)   # where a scalar starts, if not at 0
        if not set(self.group_state_init) <= set(self.group_state):
            raise TypeError(f"{opt_cls.__name__}._group_state names scalars the rule does not have: "
                            f"{sorted(set(self.group_state_init) - set(self.group_state))}")
        self.constant_state: tuple[str, ...] = tuple(opt_cls._constant_state)
        self.lowp: bool = info["lowp"]     # can keep bfloat16 or 8-bit state (etakit._lowp)
        component = {f: (key, j) for key, fs in opt_cls._tuples.items() for j, f in enumerate(fs)}
        self.sources: list[tuple[str, int | None]] = []       # per field: (group key, index in the tuple or None)
        keys: list[str] = []
        for f in self.fields:
            key, j = component.get(f["name"], (f["name"], None))
            self.sources.append((key, j))
            if key not in keys:
                keys.append(key)
        self.tuples = dict(opt_cls._tuples)
        self.extra = dict(opt_cls._extra)
        self.none_means = dict(opt_cls._none_means)
        self.kernel_keys = tuple(keys)                 # what the kernel reads
        self.keys = self.kernel_keys + tuple(k for k in self.extra if k not in keys)
        self.labels = {f["name"]: (key if j is None else f"{key}[{j}]")
                       for f, (key, j) in zip(self.fields, self.sources)}
        self.schedulable = [self.labels[f["name"]] for f in self.fields if f["schedulable"]]

    # ---- groups -------------------------------------------------------
    def pack(self, group: Mapping[str, Any], where: str, k: int = 0,
             sched: list[tuple[int, Callable[[int], Any], str]] | None = None) -> bytes:
        """Check a group's hyperparameters and pack them into the rule's C struct.

        A scheduled field is recorded in ``sched`` as (byte offset, schedule,
        label) and packed as its value at step ``k``, which the C check then
        validates like any other value."""
        values: list[Any] = []
        seen: dict[str, Any] = {}
        for key in self.kernel_keys:
            if key not in group:
                raise ValueError(f"{where} has no {key!r} entry; {self.name} groups need "
                                 f"{list(self.keys)}")
        for key, check in self.extra.items():
            if key in group and check is not None:
                check(group[key], where)
        _lowp.check(group, where, self)
        scheduled: dict[str, Any] = {}
        for f, (key, j) in zip(self.fields, self.sources):
            label = self.labels[f["name"]]
            v = group[key]
            if j is not None:
                if key not in seen:
                    n = len(self.tuples[key])
                    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != n:
                        what = "a pair" if n == 2 else f"a tuple of {n}"
                        names = ", ".join(self.tuples[key])
                        raise TypeError(f"{where}: {key} must be {what} ({names}), got {v!r}")
                    seen[key] = v
                v = v[j]
            elif v is None and key in self.none_means:
                v = self.none_means[key]
            if f["kind"] == "real" and v is None and f["optional"]:
                v = float("nan")        # None: the C struct's NaN (the rule's default)
            elif f["kind"] == "real":
                if is_scheduled(v):
                    if not f["schedulable"]:
                        raise TypeError(f"{where}: {label} cannot follow a schedule; {self.name} can schedule "
                                        f"{', '.join(self.schedulable) or 'nothing'}")
                    if sched is not None:
                        sched.append((f["offset"], v, label))
                    scheduled[f["name"]] = v
                    x = v(k)
                    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
                        raise TypeError(f"{where}: the {label} schedule returned {x!r} at step {k}; "
                                        "expected a real number")
                    v = float(x)
                else:
                    v = _real(v, label, where, key in self.none_means)
                    if v != v and f["optional"]:    # NaN would read as None in C
                        raise HyperparameterError(f"Invalid {label} for {where}: {v!r} (expected {f['range']})",
                                                  None, label, v)
            elif f["kind"] == "flag":
                v = _flag(v, label, where, key in self.none_means)
            elif key in self.choices:
                v = self._choice(key, v, where)
            else:
                v = _integer(v, label, where)
            values.append(v)
        packed = _core.pack_hparams(self.id, tuple(values))
        bad = _core.check_hparams(self.id, packed)
        if bad is not None:
            field, why = bad
            f = next(f for f in self.fields if f["name"] == field)
            i = self.fields.index(f)
            label, value = self.labels[field], values[i]
            if field in scheduled:
                raise HyperparameterError(f"Invalid {label} for {where}: its schedule gives {value!r} at step {k} "
                                          f"(expected {f['range']})", None, label, value)
            if why.endswith("out of range"):
                raise HyperparameterError(f"Invalid {label} for {where}: {value!r} (expected {f['range']})",
                                          None, label, value)
            shown = ", ".join(f"{self.labels[g['name']]}={values[n]!r}" for n, g in enumerate(self.fields)
                              if g["kind"] == "real")
            raise HyperparameterError(f"Invalid {label} for {where}: {why} (got {shown})", None, label, value)
        return packed

    def _choice(self, key: str, v: Any, where: str) -> int:
        names = self.choices[key]
        try:
            return names[v]
        except (KeyError, TypeError):   # TypeError: unhashable
            expected = ", ".join(map(repr, names))
            raise HyperparameterError(f"Invalid {key} for {where}: {v!r} (expected one of {expected})",
                                      None, key, v) from None

    def needed(self, packed: bytes) -> tuple[int, ...]:
        """Indices of the state slots these packed hyperparameters need."""
        mask = _core.rule_needs(self.id, packed)
        return tuple(j for j in range(len(self.slots)) if mask >> j & 1)

    def lacking(self, packed: bytes, shape: Shape, state: Mapping[str, Any], lazy: Sequence[str] = ()) -> list[str]:
        """Names of the state slots these hyperparameters need for a parameter of ``shape`` that
        ``state`` (a dict by name) lacks, less those the rule creates when missing (``lazy``)."""
        return [self.slot_names[j] for j in self.needed(packed)
                if self.slot_applies(j, tuple(shape)) and self.slot_names[j] not in state
                and self.slot_names[j] not in lazy]
    def check_groups(self, groups: Sequence[Mapping[str, Any]], packed: Sequence[bytes], prefix: str = "",
                     k: int = 0) -> None:
        """Raise HyperparameterError if the groups break the rule's constraints across groups."""
        bad = _core.check_groups(self.id, list(packed))
        if bad is None:
            return
        gi, field, why = bad
        label = self.labels.get(field, field)
        key, j = self.sources[next(i for i, f in enumerate(self.fields) if f["name"] == field)]
        value = groups[gi][key] if j is None else groups[gi][key][j]
        value = value_at(value, k) if is_scheduled(value) else value
        raise HyperparameterError(f"Invalid {label} for {prefix}param_groups[{gi}]: {value!r}: {label} {why}",
                                  gi, label, value)

    def unknown_keys(self, group: Mapping[str, Any], also: Sequence[str] = ()) -> list[str]:
        return [k for k in group if k != "params" and k not in self.keys and k not in self.group_state
                and k not in also and k not in _lowp.KEYS]

    # ---- state ----------------------------------------------------------
    def matrix_shape(self, shape: Shape) -> tuple[int, int]:
        """(rows, cols) of the trailing matrix for rules that factor it, else (0, 0)."""
        if self.matrix and len(shape) >= 2 and shape[-1] and shape[-2]:
            return int(shape[-2]), int(shape[-1])
        return 0, 0

    def is_matrix(self, shape: Shape) -> bool:
        """A tensor this rule treats in matrix form: two or more dimensions (as PyTorch's ``dim() > 1``).

        An empty one keeps its row and column factors (of its own shape), as the
        reference does, though the kernel has nothing to do for it."""
        return self.matrix and len(shape) >= 2

    def stride(self, j: int, group: Mapping[str, Any]) -> int:
        """The stride of strided slot ``j`` in ``group`` (the value of its integer group key)."""
        key, c = self.sources[next(i for i, f in enumerate(self.fields) if f["name"] == self.slots[j]["stride_field"])]
        return int(group[key] if c is None else group[key][c])

    def slot_shape(self, j: int, shape: Shape, group: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """The shape of slot ``j`` for a parameter of ``shape`` (a strided slot needs the parameter's group)."""
        kind = self.slots[j]["shape"]
        if kind in ("full", "vector"):
            return tuple(shape)
        if kind == "strided":
            n = int(np.prod(shape, dtype=np.int64))
            k = self.stride(j, cast("Mapping[str, Any]", group))     # (given for a strided slot)
            return (-(-n // k),)
        if kind == "scalar":
            return ()
        if kind == "rows":
            return tuple(shape[:-1]) + (1,)
        return tuple(shape[:-2]) + (1, shape[-1])

    def slot_applies(self, j: int, shape: Shape) -> bool:
        """Whether slot ``j`` is optimizer state of a parameter of this shape: row and
        column factors for matrices only, "vector" slots for the others only, a
        work slot never."""
        kind = self.slots[j]["shape"]
        if j in self.work:
            return False
        if kind in ("rows", "cols"):
            return self.is_matrix(shape)
        return kind != "vector" or not self.is_matrix(shape)

    def slot_fill(self, j: int, group: Mapping[str, Any], k: int = 0) -> float | None:
        """The value a new slot starts at, or None for a copy of the parameter.

        A slot that starts at a field takes the field's value at step ``k``
        when the field follows a schedule (ASGD's ``eta`` starts at ``lr``)."""
        slot = self.slots[j]
        if slot["init"] == "param":
            return None
        if slot["init"] == "value":
            return slot["init_value"]
        if slot["init"] == "field":
            i = next(i for i, f in enumerate(self.fields) if f["name"] == slot["init_field"])
            key, c = self.sources[i]
            return value_at(group[key] if c is None else group[key][c], k)
        return 1.0 if slot["init"] == "one" else 0.0

    def new_state(self, j: int, p: npt.NDArray[Any], group: Mapping[str, Any], k: int = 0) -> npt.NDArray[Any]:
        """A new numpy state array for slot ``j`` of parameter ``p`` (created at step ``k``), in the
        parameter's dtype (float32 for a bfloat16 parameter)."""
        fill = self.slot_fill(j, group, k)
        kind = self.slots[j]["shape"]
        dt = _lowp.full_dtype(p.dtype)
        if kind == "strided":
            if fill is None:
                return p.ravel()[::self.stride(j, group)].astype(dt)
            return np.full(self.slot_shape(j, p.shape, group), fill, dtype=dt)
        if fill is None:
            return p.astype(dt)
        if kind == "scalar":
            return np.full((), fill, dtype=np.float64)
        if kind == "full":
            return np.zeros(p.shape, dt) if fill == 0.0 else np.full(p.shape, fill, dt)
        return np.full(self.slot_shape(j, p.shape), fill, dtype=dt)

    def loaded_state(self, j: int, a: npt.NDArray[Any], shape: Shape, label: str, detail: str = "") -> npt.NDArray[Any]:
        """A loaded state value for slot ``j`` of the given ``shape``: as it is, or, for a state the
        reference may keep as one 0-d value (``_constant_state``: prodigyopt's ``p0`` of a parameter
        that was all zeros), that value broadcast to the shape.  StateError for any other shape."""
        if tuple(a.shape) == tuple(shape):
            return a
        if a.ndim == 0 and self.slot_names[j] in self.constant_state:
            return np.full(shape, a, dtype=a.dtype)
        raise StateError(f"{label} has shape {tuple(a.shape)}, expected {tuple(shape)}{detail}")

    # ---- per-group scalars -----------------------------------------------
    def group_state_start(self, group: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Any]:
        """The values the rule's per-group scalars (or those of ``names``) start at in ``group``."""
        init = self.group_state_init
        return {n: group[v] if isinstance(v := init.get(n), str) else init.get(n, 0.0)
                for n in (self.group_state if names is None else names)}


class Stepper:
    """One optimizer's link to the C engine (see the module docstring)."""

    _group_state: npt.NDArray[np.float64]     # the per-group scalars load_group_state handed to the plan

    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self.plan: _core.Plan | None = None
        self.key: ConfigKey | None = None          # the group values the configuration was made from
        self.packed: tuple[bytes, ...] = ()         # per group: the C struct
        self.needs: tuple[tuple[int, ...], ...] = ()          # per group: the state slots it needs
        # (group, byte offset, Schedule, label): evaluated in C
        self.builtin: list[tuple[int, int, Schedule, str]] = []
        # (group, byte offset, callable, label): evaluated here
        self.callables: list[tuple[int, int, Callable[[int], Any], str]] = []
        self.simple = False      # see configure
        self.group_of: list[int] = []       # per plan tensor: its group
        self.work: list[dict[str, Any]] = []           # per plan tensor: {work slot name: array}
        self._lock = threading.RLock()
        self.active = False      # inside a step, add_param_group or load_state_dict of this optimizer

    @property
    def built(self) -> _core.Plan:
        """The plan, where the caller knows one is built (configure and build ran)."""
        assert self.plan is not None
        return self.plan

    # ---- one step at a time --------------------------------------------
    # A step holds the optimizer's lock: a second thread waits for the first,
    # so no step is lost.  Re-entrant (a callable schedule or closure stepping
    # the same optimizer cannot deadlock); the plan refuses a C step while
    # another is running on the same descriptors.
    def __enter__(self) -> Stepper:
        self._lock.acquire()
        if self.active:
            self._lock.release()
            raise RuntimeError(NESTED)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        self._lock.release()

    # ---- configuration ---------------------------------------------------
    def configure(self, groups: Sequence[Group], k: int, prefix: str = "") -> None:
        """Validate and pack every group (raises before anything changes)."""
        packed: list[bytes] = []
        needs: list[tuple[int, ...]] = []
        builtin: list[tuple[int, int, Schedule, str]] = []
        calls: list[tuple[int, int, Callable[[int], Any], str]] = []
        for gi, g in enumerate(groups):
            sched: list[tuple[int, Callable[[int], Any], str]] = []
            b = self.spec.pack(g, f"{prefix}param_groups[{gi}]", k, sched)
            packed.append(b)
            needs.append(self.spec.needed(b))
            for offset, f, label in sched:
                if isinstance(f, Schedule):
                    builtin.append((gi, offset, f, label))
                else:
                    calls.append((gi, offset, f, label))
        self.spec.check_groups(groups, packed, prefix, k)
        self.packed, self.needs, self.builtin, self.callables = tuple(packed), tuple(needs), builtin, calls
        # a step that is one C call, with nothing to do in Python around it
        self.simple = not calls and not self.spec.group_state and self.spec.host is None

    def build(self, params: Sequence[npt.NDArray[Any]], states: Sequence[State], group_of: Sequence[int],
              steps: Sequence[int], fresh: Mapping[int, int], labels: list[str], seeds: Sequence[int] | None = None,
              stochastic: Sequence[bool] | None = None,
              emas: Sequence[npt.NDArray[Any]] | None = None) -> _core.Plan:
        """A new plan over ``params`` (numpy arrays) and their ``states`` ({slot name: array}, in
        any state format, etakit._lowp); ``stochastic`` (per group) and ``seeds`` (per tensor): the
        stochastic rounding of bfloat16 state."""
        spec = self.spec
        plan = _core.Plan(spec.id, len(params), len(self.packed), labels, spec.labels)
        for gi, b in enumerate(self.packed):
            plan.set_hparams(gi, b)     # before the tensors: a strided slot's size depends on them
        names = spec.slot_names
        matrix = spec.matrix
        work = []
        for i, p in enumerate(params):
            rows, cols = spec.matrix_shape(p.shape) if matrix else (0, 0)
            st = states[i]
            if spec.work:
                st = {**st, **self._work_for(i, p, group_of[i])}
                work.append({names[j]: st.get(names[j]) for j in spec.work})
            if spec.lowp and (st or _lowp.is_bf16(p)):
                fmt, arrays, scales = _lowp.plan_arrays(st, spec)
                rounds = bool(stochastic[group_of[i]]) if stochastic is not None else False
                comp = st.get(_lowp.COMP)
                plan.set_tensor(i, p, arrays, group_of[i], steps[i], fresh.get(i, 0), rows, cols, fmt,
                                rounds and fmt == _lowp.BF16, seeds[i] if seeds is not None else 0, scales,
                                comp if comp is None else comp.view(np.uint16), rounds)
            else:
                plan.set_tensor(i, p, tuple([st.get(name) for name in names]), group_of[i], steps[i],
                                fresh.get(i, 0), rows, cols)
            if emas is not None:
                plan.set_ema(i, emas[i])
        plan.index_written()
        self.plan = plan
        self.group_of = list(group_of)
        self.work = work
        self.bind()
        return plan

    def _work_for(self, i: int, p: npt.NDArray[Any], gi: int) -> dict[str, Any]:
        """Work buffers of tensor ``i`` (its previous ones when they still fit)."""
        old = self.work[i] if i < len(self.work) else {}
        out: dict[str, Any] = {}
        for j in self.spec.work:
            name = self.spec.slot_names[j]
            if j in self.needs[gi]:
                a = old.get(name)
                out[name] = a if a is not None and a.shape == p.shape and a.dtype == p.dtype else np.empty_like(p)
            else:
                out[name] = None
        return out

    def run_split(self, run: Callable[[int, bool], bool | None], groups: Sequence[Group]) -> bool | None:
        """One step of a rule with host work between its C phases.

        ``run(phases, advance)`` runs C phases (the plan's ``run`` or
        ``run_torch``, bound to the gradients); the first ``spec.host_split``
        phases run, then ``spec.host(self, groups)`` (it reads and writes the
        work buffers, ``self.work``), then the remaining phases.  Returns what
        the first call returns if it is False (a stale torch plan: nothing was
        written), else what the last returns."""
        before = (1 << self.spec.host_split) - 1
        if run(before, False) is False:
            return False
        assert self.plan is not None and self.spec.host is not None     # (run_split runs a built plan's host step)
        if self.plan.last_skipped:      # a non-finite gradient under nonfinite="skip": nothing more
            return True
        self.spec.host(self, groups)
        return run(0xFFFFFFFF & ~before, True)

    def bind(self) -> None:
        """Push the packed groups and built-in schedules into the plan."""
        assert self.plan is not None        # (called on a built plan)
        for gi, b in enumerate(self.packed):
            self.plan.set_hparams(gi, b)
        self.plan.set_schedules([(gi, offset, f._c) for gi, offset, f, _ in self.builtin])

    def load_group_state(self, groups: Sequence[Mapping[str, Any]]) -> None:
        """Hand the groups' values of the rule's per-group scalars to the plan (before a step).

        A group that lacks one (a group that has not stepped yet, or a checkpoint of the reference
        from before it first wrote it) has it at its start value (``RuleSpec.group_state_start``;
        0 unless the class's ``_group_state`` says otherwise: DoG tells a new group by 0)."""
        if self.spec.group_state:
            values = self.group_values(groups)
            assert self.plan is not None        # (called on a built plan)
            self.plan.set_group_state(values)
            self._group_state = values

    def group_values(self, groups: Sequence[Mapping[str, Any]], prefix: str = "") -> npt.NDArray[np.float64]:
        """The groups' per-group scalars (groups x names, float64), a missing one at its start value."""
        spec = self.spec
        rows = []
        for gi, g in enumerate(groups):
            missing = [n for n in spec.group_state if n not in g]
            start = spec.group_state_start(g, missing) if missing else {}
            rows.append([_group_scalar(g[n] if n in g else start[n], n, f"{prefix}param_groups[{gi}]")
                         for n in spec.group_state])
        return np.array(rows, dtype=np.float64)

    def store_group_state(self, groups: Sequence[Group]) -> None:
        """Write the per-group scalars the step updated back into the groups (one still at its
        start, 0, only into a group that has the key: a group the step did not touch stays as it was)."""
        if self.spec.group_state:
            _store_group_state(self.spec.group_state, groups, self._group_state)

    def run_side(self, phases: int, params: Sequence[npt.NDArray[Any]], states: Sequence[State],
                 group_of: Sequence[int], labels: Sequence[str], groups: Sequence[Group], k: int,
                 prefix: str = "") -> None:
        """Run side phases of the rule (passes that are not a step and read no gradient: the
        schedule-free rules' switch between the points they train at and are evaluated at) over
        the parameters that have all the state their group needs, on a plan of their own (the
        step's plan is left as it is), with the group's per-group scalars read and written back.

        ``params`` are numpy arrays (views of torch tensors for etakit.torch), ``states`` their
        {slot name: array}, ``group_of`` their groups' indices, ``groups`` the parameter groups;
        every group is validated first, and nothing is written unless all of it is valid."""
        spec = self.spec
        packed = [spec.pack(g, f"{prefix}param_groups[{gi}]", k) for gi, g in enumerate(groups)]
        needs = [spec.needed(b) for b in packed]
        chosen = [i for i, (p, gi) in enumerate(zip(params, group_of))
                  if all(spec.slot_names[j] in states[i] for j in needs[gi] if spec.slot_applies(j, p.shape))]
        plan = _core.Plan(spec.id, len(chosen), len(groups), [labels[i] for i in chosen], spec.labels)
        for n, i in enumerate(chosen):
            p = params[i]
            rows, cols = spec.matrix_shape(p.shape)
            plan.set_tensor(n, p, tuple(states[i].get(name) for name in spec.slot_names), group_of[i], 0, 0, rows, cols)
        for gi, b in enumerate(packed):
            plan.set_hparams(gi, b)
        values = None
        if spec.group_state:
            values = self.group_values(groups, prefix)
            plan.set_group_state(values)
        plan.run_side(phases, k)
        if values is not None:
            _store_group_state(spec.group_state, groups, values)

    def apply_callables(self, k: int) -> None:
        assert self.plan is not None        # (called on a built plan)
        for gi, offset, f, label in self.callables:
            v = f(k)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise TypeError(f"param_groups[{gi}]: the {label} schedule returned {v!r} at step {k}; "
                                "expected a real number")
            self.plan.set_hparam_at(gi, offset, float(v))

    def missing(self, shapes: Sequence[Shape], group_of: Sequence[int],
                states: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
        """[(tensor, slot)] the current configuration needs and ``states`` lacks."""
        spec = self.spec
        return [(i, j) for i, gi in enumerate(group_of) for j in self.needs[gi]
                if spec.slot_names[j] not in states[i] and spec.slot_applies(j, shapes[i])]
