"""Drop-in replacements for ``torch.optim`` on CPU, running etakit's fused kernels.

Every etakit optimizer has a drop-in here of the same name (``etakit.torch.AdamW``,
``etakit.torch.Lion``, ...): a ``torch.optim.Optimizer`` subclass with the
signature, defaults, update rule and state layout of its reference
(``torch.optim`` or the package its numpy class names), so checkpoints move
both ways between, say, ``torch.optim.AdamW`` and ``etakit.torch.AdamW``, and
``torch.optim.lr_scheduler`` drives them (one exception: DoG and LDoG, whose
reference keeps x0 in its parameter groups where etakit keeps it per
parameter; their trajectories match, their checkpoints do not move across).
etakit's own schedules and Python
callables work as hyperparameters too, as with the numpy optimizers.

Parameters, gradients and optimizer state are used in place, zero-copy: the
kernels write straight into the tensors' memory, all parameters of a step in
one C call with the GIL released.  Supported: dense, contiguous float32 or
float64 CPU tensors.  Parameters without a gradient are skipped, as in PyTorch.

Low-precision state (``state_dtype="bfloat16"`` or ``"int8"``, per group, with
``stochastic_rounding`` and ``min_8bit_size``; float32 parameters) works as in
the numpy optimizers (``etakit._lowp``), the state kept as PyTorch and
bitsandbytes keep it: bfloat16 state as ``torch.bfloat16`` tensors under the
reference's names (``exp_avg``, ...); 8-bit state under bitsandbytes' names,
the k-th element-wise buffer of the rule (in the order of the reference's
names: Adam's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) as
``state<k>`` (uint8 codes), ``absmax<k>`` (float32 scale per 256 elements)
and ``qmap<k>`` (the 256-value map).  So a ``bitsandbytes.optim.Adam8bit``
checkpoint loads into ``etakit.torch.Adam(state_dtype="int8")`` and back, and
any checkpoint loads into a group of any ``state_dtype``: its state is
converted to the group's format.

The drop-ins are derived from the numpy optimizers (``etakit.optim``): the
rule, its checks and the link to the engine are the same objects
(``etakit._step``); this module adds only what PyTorch needs (state in
``self.state`` under the reference's names, tensors instead of arrays).

Under ``torch.distributed`` the drop-ins work unchanged: with
``DistributedDataParallel`` (each process steps on the averaged gradients) and
as ``optimizer_class`` of ``torch.distributed.optim.ZeroRedundancyOptimizer``
(each rank's optimizer holds whole tensors of its partition), including
``consolidate_state_dict`` and resuming from it; tests/test_distributed_torch.py
checks both against one process.  With ZeRO, as with any local optimizer:
rules that reduce over every tensor of a group (Prodigy, D-Adaptation, DoG,
LAMB's ``pre_norm``, Adan's ``max_grad_norm``) reduce over the rank's partition,
and so do the fused loop options ``global_clipnorm`` (each rank clips by the norm
of its partition's gradients, not the model's) and ``nonfinite`` (a rank skips or
raises only when its own partition has a NaN or inf, so the ranks can disagree);
clip with ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`` on
the whole model before ``zero.step()`` instead (DDP's gradients are averaged
already, so every rank forms the same norm; a non-finite norm returned by it is
the same on every rank, and every rank can skip that step);
a schedule-free optimizer's mode is a group key, which ZeRO copies from its
own groups, so set it there too after ``zero.optim.train()``; and etakit
schedules given as hyperparameters restart from step 0 after a resume (ZeRO's
checkpoint keeps no ``step_count``; ``torch.optim.lr_scheduler`` keeps its own).

torch is imported by this module only (``import etakit.torch``).

Examples
--------
>>> import torch, etakit.torch
>>> model = torch.nn.Linear(4, 1)
>>> opt = etakit.torch.AdamW(model.parameters(), lr=1e-2)
>>> loss = model(torch.ones(8, 4)).pow(2).mean()
>>> loss.backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import functools
import inspect
import numbers
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt
import torch

from . import _core, _lowp, _passes
from . import optim as _optim
from ._step import NESTED, Group, RuleSpec, Stepper
from .errors import StateError

if TYPE_CHECKING:
    from typing_extensions import Self

# what a drop-in takes as its parameters: tensors, or parameter-group dicts {"params": [...], ...}
TorchParams = Union[Iterable[torch.Tensor], Iterable[Group]]

__all__ = list(_optim.OPTIMIZERS)

_DTYPES = (torch.float32, torch.float64)
_PARAM_DTYPES = _DTYPES + (torch.bfloat16,)     # bfloat16: the one-pass element-wise rules (etakit._lowp)


def _np(p: torch.Tensor) -> npt.NDArray[Any]:
    """A zero-copy numpy view of a parameter (bfloat16 as its uint16 bits)."""
    p = p.detach()
    if p.dtype == torch.bfloat16:
        return p.view(torch.int16).numpy().view(np.uint16)
    return p.numpy()
_EXTRAS = (("foreach", None), ("fused", None), ("capturable", False), ("differentiable", False))


def _check_param(p: object, where: str) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
    supported = "etakit.torch supports dense, contiguous float32, float64 or bfloat16 CPU tensors"
    if p.device.type != "cpu":
        raise ValueError(f"{where} is on {p.device}; {supported} (use torch.optim for {p.device.type})")
    if p.is_sparse or p.layout != torch.strided:
        raise ValueError(f"{where} has layout {p.layout}; {supported}")
    if p.is_complex():
        raise TypeError(f"{where} is complex ({p.dtype}); {supported}")
    if p.dtype not in _PARAM_DTYPES:
        raise TypeError(f"{where} has dtype {p.dtype}; {supported} (float16 is not supported)")
    if not p.is_contiguous():
        raise ValueError(f"{where} is not contiguous (strides {p.stride()}); {supported}: the update is in place "
                         "and never works on a copy")
    try:
        _np(p)
    except (RuntimeError, TypeError) as e:   # a tensor subclass with its own storage rules, say
        raise TypeError(f"{where} ({type(p).__name__}) cannot be updated in place by etakit: {e}") from None
    if p.numel() and p.data_ptr() % p.element_size():
        raise ValueError(f"{where} is not aligned to its dtype; {supported}")


def _floats(group: Group) -> Group:
    """The group with 0-d tensor hyperparameters (PyTorch allows a Tensor lr) as floats."""
    if not any(isinstance(v, torch.Tensor) or (k == "betas" and isinstance(v, (tuple, list)) and
                                               any(isinstance(b, torch.Tensor) for b in v))
               for k, v in group.items() if k != "params"):
        return group
    out = dict(group)
    for k, v in group.items():
        if isinstance(v, torch.Tensor) and k != "params":
            out[k] = float(v)
        elif k == "betas" and isinstance(v, (tuple, list)):
            out[k] = tuple(float(b) if isinstance(b, torch.Tensor) else b for b in v)
    return out


_LOWP_KEYS = tuple(_lowp.KEYS)
_Q8_NAME = re.compile(r"(state|absmax|qmap)([1-9][0-9]*)$")
_Q8_WRAPPED = "__bnb_optimizer_quant_state__"     # where bitsandbytes' state_dict nests its 8-bit tensors


@functools.lru_cache(maxsize=None)
def _q8_slots(spec: RuleSpec) -> dict[str, int]:
    """{state name: k} of a rule's element-wise slots: in 8-bit form, the k-th (1, 2, ... in slot order)
    is kept as bitsandbytes keeps its buffers, ``state<k>``, ``absmax<k>`` and ``qmap<k>``."""
    names = [s["name"] for j, s in enumerate(spec.slots) if s["shape"] == "full" and j not in spec.work]
    return {name: k + 1 for k, name in enumerate(names)}


@functools.lru_cache(maxsize=None)
def _qmap(signed: bool) -> torch.Tensor:
    """The 8-bit map as bitsandbytes keeps it in the state (one tensor shared by every parameter)."""
    return torch.from_numpy(_core.q8_map(signed))


def _numpy_of(t: object, label: str, name: str) -> npt.NDArray[Any]:
    """A zero-copy numpy view of a state tensor (bfloat16 as its uint16 bits)."""
    if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.layout != torch.strided:
        raise StateError(f"the optimizer state {name!r} of {label} must be a CPU tensor")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _check_qmap(q: object, signed: bool, where: str) -> bool:
    """A loaded 8-bit map: 256 increasing float32 values in [-1, 1]; True if it is not etakit's."""
    if not isinstance(q, torch.Tensor) or q.dtype != torch.float32 or tuple(q.shape) != (256,) or \
            q.device.type != "cpu":
        got = f"{q.dtype} {tuple(q.shape)} on {q.device}" if isinstance(q, torch.Tensor) else type(q).__name__
        raise StateError(f"{where} is {got}; expected the float32 CPU map of 256 values")
    a = q.numpy()
    if not (np.isfinite(a).all() and (np.diff(a) > 0).all() and a[0] >= -1 and a[-1] <= 1):
        raise StateError(f"{where} is not an 8-bit map (256 increasing values in [-1, 1])")
    return not np.array_equal(a, _core.q8_map(signed))


def _counting(name: str) -> Callable[..., Any]:
    """_State's method ``name``: dict's, counting a change."""
    def method(self: _State, *args: Any, **kwargs: Any) -> Any:
        self.version += 1
        return getattr(super(_State, self), name)(*args, **kwargs)
    method.__name__ = name
    return method


class _State(defaultdict[Any, dict[str, Any]]):
    """A drop-in's ``self.state``: torch's ``defaultdict(dict)`` that counts changes to its entries.

    ``torch.distributed.optim.ZeroRedundancyOptimizer.load_state_dict`` assigns a
    parameter's whole entry (``optim.state[p] = {...}``) instead of calling the
    optimizer's ``load_state_dict``; the count tells the next step that its plan
    (pointers into the old buffers) is stale.  (A tensor replaced inside an entry,
    ``state[p]["exp_avg"] = t``, is not seen: write into the tensor instead.)"""

    def __init__(self, *args: Any) -> None:
        super().__init__(dict, *args)
        self.version = 0

    def __reduce__(self) -> Any:      # defaultdict's would call _State(dict)
        return type(self), (), None, None, iter(self.items())

    def __setitem__(self, key: Any, value: dict[str, Any]) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.version += 1
        super().__delitem__(key)

    pop, popitem, clear, update, setdefault = map(_counting, ("pop", "popitem", "clear", "update", "setdefault"))


def _loop_property(name: str) -> property:
    """A drop-in's loop option ``name`` (etakit._passes), as a property checked when set; its docstring is
    the summary of the numpy optimizers' property of that name."""
    def get(self: _DropIn) -> Any:
        return getattr(self._loop, name)

    def set_(self: _DropIn, v: Any) -> None:
        with self._stepper:
            setattr(self._loop, name, v)
            if name == "ema_decay" and v is not None and self._ema is None:
                self._ema = {}
                self._stepper.plan = None
    return property(get, set_, doc=inspect.cleandoc(getattr(_optim.Optimizer, name).__doc__).split("\n\n")[0])


class _DropIn(torch.optim.Optimizer):
    """Shared machinery of the drop-ins: PyTorch-layout state, one C call per step."""

    # the numpy optimizer class whose rule this runs (set on each drop-in class)
    _numpy: type[_optim.Optimizer] = None  # type: ignore[assignment]  # (None on this base class only)
    state: _State   # (torch.optim's defaultdict(dict), counting its changes)

    def __init__(self, params: TorchParams, defaults: dict[str, Any]) -> None:
        for flag in ("capturable", "differentiable"):
            if defaults.get(flag):
                raise ValueError(f"etakit.torch does not support {flag}=True")
        self._stepper = Stepper(RuleSpec.of(self._numpy))
        spec = self._stepper.spec
        self._get_hp = operator.itemgetter(*spec.kernel_keys)
        # every parameter's step count (a view of one float32 tensor), or None
        self._steps: npt.NDArray[np.float32] | None = None
        self._k = 0
        self._loop = _passes.LoopOptions()
        # {parameter: its EMA tensor} (ema_decay), made at the first step
        self._ema: dict[torch.Tensor, torch.Tensor] | None = None
        self._ema_swapped = False
        self._grad_scale: float | None = None
        self.skipped_steps = 0
        self.last_grad_norm: float | None = None
        spec.pack(_floats(defaults), "defaults")
        super().__init__(params, defaults)
        self.state = _State(self.state)
        # (self.state, its version) when the plan was built
        self._state_mark: tuple[_State | None, int] = (None, -1)

    # torch.amp.GradScaler hands the loss scale and its inf check to the step
    # (optimizer.grad_scale, optimizer.found_inf), as to PyTorch's fused optimizers
    _step_supports_amp_scaling = True

    @property
    def step_count(self) -> int:
        """Completed steps: the ``k`` at which etakit schedules in the groups are evaluated next."""
        return self._k

    # ---- groups and checkpoints -----------------------------------------
    def add_param_group(self, param_group: Group) -> None:
        with self._stepper:
            self._add_param_group(param_group)

    def _add_param_group(self, param_group: Group) -> None:
        n = len(self.param_groups)
        super().add_param_group(param_group)
        try:
            group = self.param_groups[n]
            for j, p in enumerate(group["params"]):
                _check_param(p, f"param_groups[{n}]['params'][{j}]")
            everything = [(p, f"param_groups[{gi}]['params'][{j}]") for gi, g in enumerate(self.param_groups)
                          for j, p in enumerate(g["params"])]
            pair = _core.first_overlap([_np(p) for p, _ in everything])
            if pair is not None:
                raise ValueError(f"{everything[pair[0]][1]} and {everything[pair[1]][1]} overlap in memory; "
                                 "parameters must be distinct buffers (the step writes each)")
            for key in self._stepper.spec.tuples:    # a list could be changed in place unseen
                if isinstance(group.get(key), list):
                    group[key] = tuple(group[key])
                if self._stepper.spec.matrix_only:
                    _optim._check_matrix(p, f"param_groups[{n}]['params'][{j}]", type(self).__name__)
            self._stepper.spec.pack(_floats(group), f"param_groups[{n}]", self._k)   # low-precision keys too
            _lowp.check_params(group, group["params"], [f"param_groups[{n}]['params'][{j}]"
                                                        for j in range(len(group["params"]))],
                               self._stepper.spec)
            if self._ema is not None or self._loop.ema_decay is not None:
                _lowp.refuse_bf16_ema(group["params"], "add_param_group with ema_decay set")
            if self._numpy._torch_step == "group":
                group.setdefault("step", 0)
        except Exception:
            del self.param_groups[n:]   # torch keeps no other record of the group
            raise
        self._stepper.plan = None

    def state_dict(self) -> dict[str, Any]:
        with self._stepper._lock:
            sd = super().state_dict()
        # "step" tensors are views into one buffer the kernel advances: hand out
        # copies, in new dicts (torch's state_dict shares the per-parameter dicts)
        sd["state"] = {k: ({**st, "step": st["step"].clone()} if isinstance(st.get("step"), torch.Tensor) else st)
                       for k, st in sd["state"].items()}
        sd["step_count"] = self._k
        if self._ema is not None or self.skipped_steps:
            index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
            ema = None
            if self._ema is not None:
                ema = {index[p]: (p.detach() if self._ema_swapped else e).clone() for p, e in self._ema.items()
                       if p in index}
            sd["loop"] = {"skipped_steps": self.skipped_steps, "ema": ema}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with self._stepper:
            if self._ema_swapped:
                raise RuntimeError("the parameters hold the EMA weights (swap_ema); swap them back before loading")
            loop = self._loaded_loop(state_dict.get("loop") if isinstance(state_dict, dict) else None)
            if isinstance(state_dict, dict) and isinstance(state_dict.get("param_groups"), (list, tuple)) and \
                    len(state_dict["param_groups"]) == len(self.param_groups):
                # stochastic rounding of a checkpoint of bfloat16 parameters has nothing to round here
                state_dict = {**state_dict, "param_groups": [
                    {**_lowp.adapt_loaded_group({k: v for k, v in g.items() if k != "params"}, mine["params"]),
                     "params": g["params"]} if isinstance(g, dict) and "params" in g else g
                    for g, mine in zip(state_dict["param_groups"], self.param_groups)]}
            self._check_loaded(state_dict)
            state_dict = dict(state_dict)
            state_dict.pop("loop", None)
            step_count = state_dict.pop("step_count", 0)
            self.skipped_steps, self._ema = loop
            kept = [{k: g[k] for k in self._kept_keys(state_dict) if k in g} for g in self.param_groups]
            # 8-bit tensors (bitsandbytes' names, maybe nested as its state_dict nests them) are kept
            # out of torch.optim's load, which would cast the codes to the parameters' dtype
            mine = [p for g in self.param_groups for p in g["params"]]
            ids = [i for g in state_dict["param_groups"] for i in g["params"]]
            held, state = {}, {}
            for key, entry in state_dict["state"].items():
                entry = dict(entry)
                entry.update(entry.pop(_Q8_WRAPPED, {}))
                q8 = {name: entry.pop(name) for name in list(entry) if _Q8_NAME.match(name)}
                if mine[ids.index(key)].dtype != torch.bfloat16:
                    entry.pop(_lowp.COMP, None)     # nothing to compensate in a float32 parameter
                else:
                    # torch.optim's load casts floating state to the parameter's dtype: a bfloat16
                    # parameter's float32 state is kept as it is (converted below if need be)
                    q8.update({name: entry.pop(name) for name in list(entry)
                               if name in self._stepper.spec.state_names or name == _lowp.COMP})
                if q8:
                    held[mine[ids.index(key)]] = q8
                state[key] = entry
            super().load_state_dict({**state_dict, "state": state})
            for g, old in zip(self.param_groups, kept):
                for k, v in old.items():
                    g.setdefault(k, v)   # the reference keeps it on the optimizer, not in its groups
            spec = self._stepper.spec
            slots = {k: name for name, k in _q8_slots(spec).items()}
            scalars = [name for j, name in enumerate(spec.slot_names) if spec.slots[j]["shape"] == "scalar"]
            for p, q8 in held.items():
                full = torch.float32 if p.dtype == torch.bfloat16 else p.dtype
                for name, v in q8.items():
                    m = _Q8_NAME.match(name)
                    if m is None:       # the state of a bfloat16 parameter
                        if name == _lowp.COMP:
                            v = v.to(torch.bfloat16)
                        elif v.dtype == torch.float64 and name not in scalars:
                            v = v.to(torch.float32)
                        self.state[p][name] = v.clone().contiguous()
                    elif m.group(1) == "state" and v.is_floating_point():   # bitsandbytes' 32-bit state
                        self.state[p][slots[int(m.group(2))]] = v.to(full).contiguous()
                    else:
                        self.state[p][name] = v.contiguous()
            for st in self.state.values():
                for name in scalars:   # torch casts state to the parameter dtype; these are float64
                    if isinstance(st.get(name), torch.Tensor):
                        st[name] = st[name].to(torch.float64)
                for name in spec.state_names:   # the kernels write state in place: contiguous, owned
                    t = st.get(name)
                    if isinstance(t, torch.Tensor) and not t.is_contiguous():
                        st[name] = t.contiguous()
                for name in self._numpy._ignored_state:
                    st.pop(name, None)
            if spec.constant_state:     # one 0-d value standing for a whole buffer: the buffer
                for g in self.param_groups:
                    for p in g["params"]:
                        st = self.state.get(p, {})
                        for name in spec.constant_state:
                            v = st.get(name)
                            if isinstance(v, torch.Tensor) and v.dim() == 0:
                                j = spec.slot_names.index(name)
                                st[name] = torch.full(spec.slot_shape(j, tuple(p.shape), _floats(g)), float(v),
                                                      dtype=p.dtype)
            if spec.lowp:   # into the loaded groups' state formats (a float32 checkpoint into int8, ...)
                self._q8_foreign_maps()
                self._to_formats([p for g in self.param_groups for p in g["params"]],
                                 [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]])
            self._k = int(step_count)
            self._stepper.plan = None
            self._stepper.key = None

    def _check_loaded(self, sd: Any) -> None:
        """What torch.optim's load_state_dict does not check, before anything changes."""
        spec = self._stepper.spec
        if not isinstance(sd, dict) or not isinstance(sd.get("param_groups"), (list, tuple)) or \
                not isinstance(sd.get("state"), dict):
            raise ValueError("state_dict must be a dict with a 'state' dict and a 'param_groups' list")
        step_count = sd.get("step_count", 0)
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) or \
                not 0 <= step_count < 2**62:  # type: ignore[operator]  # typeshed's numbers.Integral has no __ge__
            raise ValueError(f"loaded step_count must be an integer >= 0 and < 2**62, got {step_count!r}")
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(sd['param_groups'])} parameter groups, this optimizer "
                             f"has {len(self.param_groups)}")
        params, packed, loaded_groups, packed_groups = [], {}, [], []
        for gi, (g, mine) in enumerate(zip(sd["param_groups"], self.param_groups)):
            where = f"loaded param_groups[{gi}]"
            if not isinstance(g, dict) or not isinstance(g.get("params"), (list, tuple)):
                raise ValueError(f"{where} is not a parameter-group dict with a 'params' list")
            if len(g["params"]) != len(mine["params"]):
                raise ValueError(f"{where} has {len(g['params'])} parameters, this optimizer's has "
                                 f"{len(mine['params'])}")
            missing = [k for k in spec.kernel_keys if k not in g and k not in self._kept_keys(sd)]
            if missing:
                raise ValueError(f"{where} lacks {missing}; a {type(self).__name__} group has "
                                 f"{list(spec.kernel_keys)} (was it saved by another optimizer?)")
            kept = {k: mine[k] for k in self._kept_keys(sd) if k in mine and k not in g}
            full = _floats({**kept, **g})
            b = spec.pack(full, where, int(step_count))     # low-precision keys too
            _lowp.check_params(full, mine["params"], [f"param_groups[{gi}]['params'][{j}]"
                                                      for j in range(len(mine["params"]))], spec)
            loaded_groups.append(full)
            packed_groups.append(b)
            if self._numpy._torch_step == "group" and "step" in g:
                v = g["step"]
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or \
                        not 0 <= v < 2**62:  # type: ignore[operator]  # typeshed's numbers.Integral: no __ge__
                    raise ValueError(f"{where}['step'] must be an integer >= 0 and < 2**62, got {v!r}")
            for key in g["params"]:
                packed[key] = b
            params += [(key, (p, full)) for key, p in zip(g["params"], mine["params"])]
        spec.check_groups(loaded_groups, packed_groups, "loaded ", int(step_count))
        index = dict(params)
        for key, entry in sd["state"].items():
            if key not in index or not isinstance(entry, dict):
                raise ValueError(f"loaded state has an entry {key!r} that is not a parameter index of the groups")
            p, group = index[key]
            entry = self._loaded_entry(entry, p, key)
            for name, v in entry.items():
                if name == "step":
                    if not (isinstance(v, torch.Tensor) and v.numel() == 1) and \
                            (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                        raise ValueError(f"loaded state[{key}]['step'] must be a number, got {v!r}")
                    f = float(v)
                    if not (0 <= f < 2**62 and f == int(f)):
                        raise ValueError(f"loaded state[{key}]['step'] must be a whole number >= 0 and < 2**62, "
                                         f"got {f!r}")
                    continue
                if name in self._numpy._ignored_state or _Q8_NAME.match(name):
                    continue   # the reference writes it and never reads it; 8-bit buffers: _loaded_entry
                if name == _lowp.COMP and spec.lowp:
                    if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(p.shape) or \
                            not v.is_floating_point() or v.device.type != "cpu":
                        got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
                        raise StateError(f"loaded state[{key}][{name!r}] is {got}; expected the bfloat16 Kahan "
                                         f"compensation of shape {tuple(p.shape)}")
                    continue
                if name not in spec.state_names:
                    raise ValueError(f"loaded state[{key}] has an unknown entry {name!r}; {type(self).__name__} "
                                     f"keeps {sorted(spec.state_names)} and 'step' (was it saved by another "
                                     "optimizer?)")
                j = spec.slot_names.index(name)
                if not spec.slot_applies(j, tuple(p.shape)):
                    raise StateError(f"loaded state[{key}][{name!r}] is not state of a parameter of shape "
                                     f"{tuple(p.shape)} for {type(self).__name__}")
                shape = spec.slot_shape(j, tuple(p.shape), group)
                constant = name in spec.constant_state and isinstance(v, torch.Tensor) and v.dim() == 0
                if not isinstance(v, torch.Tensor) or (tuple(v.shape) != shape and not constant) or \
                        not v.is_floating_point() or v.device.type != "cpu" or v.layout != torch.strided:
                    got = (f"{v.dtype} {tuple(v.shape)} on {v.device}" if isinstance(v, torch.Tensor)
                           else type(v).__name__)
                    raise StateError(f"loaded state[{key}][{name!r}] is {got}; expected a floating-point CPU "
                                     f"tensor of shape {shape}")
            q8 = {name for name, k in _q8_slots(spec).items() if f"state{k}" in entry}
            has_step = ("step" in entry and float(entry["step"]) > 0) or \
                any(n in spec.state_names for n in entry) or bool(q8)
            if has_step:
                lacking = spec.lacking(packed[key], tuple(p.shape), {**entry, **dict.fromkeys(q8)},
                                       self._numpy._lazy_state)
                if lacking:
                    raise StateError(f"loaded state[{key}] lacks {lacking}, which {type(self).__name__} keeps "
                                     "after a step (was it saved by another optimizer?)")

    def _kept_keys(self, sd: dict[str, Any]) -> tuple[str, ...]:
        """Group keys a loaded group may lack, which then keep this optimizer's values: those its
        reference keeps elsewhere, the low-precision options, and, from a bitsandbytes checkpoint
        (8-bit state under its names), whatever bitsandbytes' groups do not have (amsgrad, maximize...)."""
        keys = self._numpy._group_optional + _LOWP_KEYS
        if any(isinstance(e, dict) and any(k == _Q8_WRAPPED or _Q8_NAME.match(k) for k in e if isinstance(k, str))
               for e in sd["state"].values()):
            keys += self._stepper.spec.kernel_keys
        return keys

    def _loaded_entry(self, entry: dict[str, Any], p: torch.Tensor, key: Any) -> dict[str, Any]:
        """A loaded state entry with bitsandbytes' nested 8-bit tensors unnested, its 8-bit buffers
        (``state<k>``, ``absmax<k>``, ``qmap<k>``) checked, and one state format in it (StateError)."""
        spec = self._stepper.spec
        where = f"loaded state[{key}]"
        entry = dict(entry)
        nested = entry.pop(_Q8_WRAPPED, None)
        if nested is not None:
            if not isinstance(nested, dict):
                raise StateError(f"{where}[{_Q8_WRAPPED!r}] must be a dict of 8-bit state tensors")
            entry.update(nested)
        slots = _q8_slots(spec) if spec.lowp else {}
        by_k = {k: name for name, k in slots.items()}
        n = p.numel()
        kinds = set()
        for name, v in entry.items():
            m = _Q8_NAME.match(name)
            if m is None:
                if name in slots and isinstance(v, torch.Tensor):
                    kinds.add("bfloat16" if v.dtype == torch.bfloat16 else "float")
                continue
            what, k = m.group(1), int(m.group(2))
            slot = by_k.get(k)
            if slot is None:
                raise ValueError(f"{where} has an unknown entry {name!r}; {type(self).__name__} keeps 8-bit state "
                                 f"as state<k>, absmax<k>, qmap<k> for k in 1..{len(slots)} "
                                 f"({', '.join(by_k[i] for i in sorted(by_k))})" if slots else
                                 f"{where} has an unknown entry {name!r}; {type(self).__name__} keeps no 8-bit state")
            if slot in entry:
                raise StateError(f"{where} holds {slot!r} twice: as {slot!r} and as the 8-bit {name!r}")
            if what != "state" and (not isinstance(entry.get(f"state{k}"), torch.Tensor) or
                                    entry[f"state{k}"].dtype != torch.uint8):
                raise StateError(f"{where}[{name!r}] has no 8-bit codes 'state{k}' ({slot}) to go with")
            if not isinstance(v, torch.Tensor) or v.device.type != "cpu" or v.layout != torch.strided:
                raise StateError(f"{where}[{name!r}] must be a CPU tensor, got {type(v).__name__}")
            signed = not spec.slots[spec.slot_names.index(slot)]["nonneg"]
            if what == "qmap":
                _check_qmap(v, signed, f"{where}[{name!r}]")
            elif what == "state" and v.is_floating_point():     # bitsandbytes' 32-bit state (small tensors)
                kinds.add("float")
                if tuple(v.shape) != tuple(p.shape) or f"absmax{k}" in entry:
                    raise StateError(f"{where}[{name!r}] ({slot}) is {v.dtype} {tuple(v.shape)}; expected the "
                                     f"state of shape {tuple(p.shape)} (float, without scales) or uint8 codes")
            elif what == "state":
                kinds.add("int8")
                if v.dtype != torch.uint8 or tuple(v.shape) != tuple(p.shape):
                    raise StateError(f"{where}[{name!r}] ({slot}) is {v.dtype} {tuple(v.shape)}; expected uint8 "
                                     f"codes of shape {tuple(p.shape)}")
                if f"absmax{k}" not in entry:
                    raise StateError(f"{where}[{name!r}] holds 8-bit codes without their scales 'absmax{k}'")
            else:
                if v.dtype != torch.float32 or tuple(v.shape) != (-(-n // 256),):
                    raise StateError(f"{where}[{name!r}] is {v.dtype} {tuple(v.shape)}; expected float32 of shape "
                                     f"{(-(-n // 256),)} (one scale per 256 elements)")
                if bool((v < 0).any()):     # (NaN and inf are what a non-finite gradient leaves: they load)
                    raise StateError(f"{where}[{name!r}] holds a negative scale")
        if len(kinds) > 1:
            raise StateError(f"{where} mixes state formats ({', '.join(sorted(kinds))})")
        return entry

    # ---- low-precision state ------------------------------------------------
    def _arrays(self, s: dict[str, Any], label: str) -> dict[str, npt.NDArray[Any]]:
        """The numpy form of one parameter's state (etakit._lowp's: 8-bit codes under the slot's name,
        their scales under ``<name>_absmax``, bfloat16 as uint16 bits), zero-copy views."""
        spec = self._stepper.spec
        slots = _q8_slots(spec) if spec.lowp else {}
        out = {}
        for name in spec.state_names:
            k = slots.get(name)
            if k is not None and f"state{k}" in s:
                out[name] = _numpy_of(s[f"state{k}"], label, f"state{k}")
                out[name + "_absmax"] = _numpy_of(s[f"absmax{k}"], label, f"absmax{k}")
            elif s.get(name) is not None:
                out[name] = _numpy_of(s[name], label, name)
        c = s.get(_lowp.COMP)
        if c is not None:
            if not isinstance(c, torch.Tensor) or c.dtype != torch.bfloat16 or not c.is_contiguous():
                raise StateError(f"the Kahan compensation {_lowp.COMP!r} of {label} must be a contiguous "
                                 "bfloat16 tensor")
            out[_lowp.COMP] = _numpy_of(c, label, _lowp.COMP)
        return out

    def _store(self, s: dict[str, Any], arrays: dict[str, npt.NDArray[Any]], fmt: int) -> None:
        """Put ``arrays`` (etakit._lowp's form, new arrays in format ``fmt``) into the state dict ``s``
        in place of what its slots held."""
        spec = self._stepper.spec
        for name, k in _q8_slots(spec).items():
            a = arrays.get(name)
            if a is None:
                continue
            for old in (name, f"state{k}", f"absmax{k}", f"qmap{k}"):
                s.pop(old, None)
            if fmt == _lowp.Q8:
                s[f"state{k}"] = torch.from_numpy(a)
                s[f"absmax{k}"] = torch.from_numpy(arrays[name + "_absmax"])
                s[f"qmap{k}"] = _qmap(not spec.slots[spec.slot_names.index(name)]["nonneg"])
            elif fmt == _lowp.BF16:
                s[name] = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
            else:
                s[name] = torch.from_numpy(a)

    def _to_formats(self, params: Sequence[torch.Tensor], gis: Sequence[int]) -> None:
        """Convert each parameter's state to the format its group asks for (etakit._lowp.target),
        through float32 (the state of a bfloat16 group as bfloat16, ...)."""
        spec = self._stepper.spec
        for p, gi in zip(params, gis):
            s = self.state.get(p)
            if not s:
                continue
            arrays = self._arrays(s, f"param_groups[{gi}]")
            if not arrays:
                continue
            fmt = _lowp.target(self.param_groups[gi], p.numel())
            new = _lowp.convert(arrays, spec, fmt, np.float32, raw=True)
            if new is not arrays:
                self._store(s, new, fmt)

    def _q8_foreign_maps(self) -> None:
        """8-bit state loaded with another map than etakit's (bitsandbytes' RMSprop8bit keeps its
        second moments in the signed map, say): decoded with its own map into float32 state."""
        spec = self._stepper.spec
        for st in self.state.values():
            for name, k in _q8_slots(spec).items():
                q = st.get(f"qmap{k}")
                if q is None or f"state{k}" not in st:
                    continue
                if not _check_qmap(q, not spec.slots[spec.slot_names.index(name)]["nonneg"], name):
                    st[f"qmap{k}"] = _qmap(not spec.slots[spec.slot_names.index(name)]["nonneg"])
                    continue
                codes, scales = st.pop(f"state{k}"), st.pop(f"absmax{k}")
                st.pop(f"qmap{k}")
                n = codes.numel()
                values = q[codes.reshape(-1).long()] * scales.repeat_interleave(256)[:n]
                st[name] = values.reshape(codes.shape).contiguous()

    # ---- stepping ---------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]  # (torch.optim: two overloads)
        """One optimizer step for every parameter that has a gradient (one C call).

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; run (with gradients
            enabled) before the step, as in ``torch.optim``.

        Returns
        -------
        float or None
            The closure's loss, or None without a closure.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = etakit.torch.SGD([w], lr=0.5)
        >>> w.grad = torch.ones(2); opt.step()
        >>> w.detach()
        tensor([0.5000, 0.5000])
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        st = self._stepper
        with st._lock:
            if st.active:
                raise RuntimeError(NESTED)
            st.active = True
            try:
                self._step()
            finally:
                st.active = False
        return loss

    def _step(self) -> None:
        if self._ema_swapped:
            raise RuntimeError("the parameters hold the EMA weights (swap_ema); swap them back before stepping")
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf.sum()) != 0.0:
            self.skipped_steps += 1         # GradScaler found inf or NaN: no step (it lowers the scale)
            return
        scale = getattr(self, "grad_scale", None)
        self._grad_scale = _passes.check_grad_scale(float(scale) if scale is not None else None)
        self.last_grad_norm = None
        if self._loop.ema_decay is not None and self._ema is None:
            _lowp.refuse_bf16_ema([p for g in self.param_groups for p in g["params"]], "ema_decay")
            self._ema = {}
        self._run_step()

    def _set_loop(self) -> None:
        self._loop.set_plan(self._stepper.plan, self._k + 1, self._grad_scale)

    def _run_step(self) -> None:
        st = self._stepper
        groups = self.param_groups
        key = (tuple(self._get_hp(_floats(g)) for g in groups), tuple(map(_lowp.options, groups)))
        if key != st.key:
            for g in groups:
                for name in st.spec.tuples:    # a list could be changed in place unseen
                    if isinstance(g.get(name), list):
                        g[name] = tuple(g[name])
            key = (tuple(self._get_hp(_floats(g)) for g in groups), tuple(map(_lowp.options, groups)))
            needs = st.needs
            st.configure([_floats(g) for g in groups], self._k)    # low-precision keys too
            for gi, g in enumerate(groups):
                _lowp.check_params(g, g["params"], [f"param_groups[{gi}]['params'][{j}]"
                                                    for j in range(len(g["params"]))], st.spec)
            if st.plan is not None:
                if st.needs != needs or st.key is None or key[1] != st.key[1]:
                    st.plan = None       # new state (amsgrad, momentum...), or state in another format
                else:
                    st.bind()            # refused if it would resize state (Prodigy's slice_p)
            st.key = key
        k = self._k
        ran = False
        if st.plan is not None and self._state_replaced():
            st.plan = None
        if st.plan is not None and st.spec.host is None:
            self._before_run(groups, k)
            self._set_loop()
            ran = st.plan.run_torch_groups(groups, k)
        if not ran:
            # the plan does not fit (first step, another set of gradients, p.data
            # replaced, new state needed), or the rule has host work between its
            # phases: take the gradients the groups hold now
            params, grads, gis = [], [], []
            for gi, group in enumerate(groups):
                for p in group["params"]:
                    if p.grad is not None:
                        params.append(p)
                        grads.append(p.grad)
                        gis.append(gi)
            if not params:
                return
            if st.spec.host is None or st.plan is None or not st.plan.torch_params_are(params):
                self._prepare(params, grads, gis)
            self._before_run(groups, k)
            self._set_loop()
            if st.spec.host is None:
                if not st.built.run_torch(params, grads, k):     # never silently a step that did nothing
                    raise RuntimeError("etakit.torch: the plan built for this step does not fit its parameters "
                                       "(please report this as a bug)")
            elif not self._run_split(params, grads, k):   # a parameter's memory was replaced
                self._prepare(params, grads, gis)
                self._before_run(groups, k)
                self._set_loop()
                self._run_split(params, grads, k)
        self.last_grad_norm = st.built.last_grad_norm if self._loop.makes_norm else None
        if st.built.last_skipped:
            self.skipped_steps += 1
            return
        if st.spec.group_state:
            st.store_group_state(groups)
        if self._steps is not None:
            self._steps += 1
        if self._numpy._torch_step == "group":
            for g in groups:
                g["step"] = g.get("step", 0) + 1
        self._k = k + 1

    def _state_replaced(self) -> bool:
        """Whether entries of ``self.state`` (or the dict itself) were replaced since the plan was built."""
        s = self.state
        if type(s) is not _State:      # torch's load_state_dict, or a user, put a new dict there
            self.state = s = _State(s)
        mark = self._state_mark
        return mark[0] is not s or mark[1] != s.version

    def _run_side(self, phases: int) -> None:
        """Run side phases of the rule (passes that are not a step and read no gradient,
        ``Stepper.run_side``) over every parameter that has its state."""
        with self._stepper:
            self._side(phases)

    def _side(self, phases: int) -> None:
        """``_run_side`` with the stepper already held."""
        st = self._stepper
        spec = st.spec
        params, states, gis, labels, tensors = [], [], [], [], []
        for gi, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                label = f"param_groups[{gi}]['params'][{j}]"
                tensors.append(p)
                s = self.state[p] if p in self.state else {}
                arrays = {}
                for name in spec.state_names:
                    t = s.get(name)
                    if t is None:
                        continue
                    if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.layout != torch.strided:
                        raise StateError(f"the optimizer state {name!r} of {label} must be a CPU tensor")
                    arrays[name] = t.detach().numpy()
                params.append(_np(p))
                states.append(arrays)
                gis.append(gi)
                labels.append(label)
        st.run_side(phases, params, states, gis, labels, self.param_groups, self._k)
        for p in tensors:      # written in place: autograd must see it, as after a step
            torch._C._increment_version(p)

    def _before_run(self, groups: Sequence[Group], k: int) -> None:
        st = self._stepper
        if st.callables:
            st.apply_callables(k)
        if st.spec.group_state:
            st.load_group_state([_floats(g) for g in groups])

    def _run_split(self, params: list[torch.Tensor], grads: list[torch.Tensor], k: int) -> bool | None:
        """The C phases around the rule's host step (see Stepper.run_split); False if the plan is stale."""
        plan = self._stepper.built
        return self._stepper.run_split(
            lambda phases, advance: plan.run_torch(params, grads, k, phases=phases, advance=advance),
            [_floats(g) for g in self.param_groups])

    def _prepare(self, params: list[torch.Tensor], grads: list[torch.Tensor], gis: list[int]) -> None:
        """Check the gradients, create missing state, build the plan."""
        st = self._stepper
        spec = st.spec
        for p in params:        # a compensation outlives its use if the parameter left bfloat16 (model.float())
            if p.dtype != torch.bfloat16 and _lowp.COMP in self.state.get(p, {}):
                del self.state[p][_lowp.COMP]
        self._build_plan(params, gis, {}, final=False)
        try:
            st.built.run_torch(params, grads, self._k, check_only=True)
        except BaseException:
            st.plan = None          # that plan lacks the new state: never step with it
            raise
        fresh: dict[int, int] = {}
        for i, (p, gi) in enumerate(zip(params, gis)):
            s = self.state[p]
            if self._numpy._torch_step == "state" and "step" not in s:
                s["step"] = torch.tensor(0.0, dtype=torch.float32)
            for j in st.needs[gi]:
                name = spec.slot_names[j]
                if s.get(name) is None and spec.slot_applies(j, tuple(p.shape)) and \
                        f"state{_q8_slots(spec).get(name)}" not in s:
                    s[name] = self._new_state(j, p, self.param_groups[gi])
                    fresh[i] = fresh.get(i, 0) | (1 << j)
        if spec.lowp:
            self._to_formats(params, gis)
            for p, gi in zip(params, gis):
                # bfloat16 parameters: the Kahan compensation, from zero, while the group asks for it
                s = self.state[p]
                if not _lowp.keeps_comp(p, self.param_groups[gi]):
                    s.pop(_lowp.COMP, None)
                elif not isinstance(s.get(_lowp.COMP), torch.Tensor):
                    s[_lowp.COMP] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        self._build_plan(params, gis, fresh)

    def _new_state(self, j: int, p: torch.Tensor, group: Group) -> torch.Tensor:
        spec = self._stepper.spec
        group = _floats(group)
        fill = spec.slot_fill(j, group, self._k)
        if spec.slots[j]["shape"] == "strided" and fill is None:
            return p.detach().flatten()[::spec.stride(j, group)].clone()
        dt = torch.float32 if p.dtype == torch.bfloat16 else p.dtype    # bfloat16 parameters: float32 state
        if fill is None:
            return p.detach().to(dt).clone(memory_format=torch.contiguous_format)
        if spec.slots[j]["shape"] == "scalar":
            return torch.tensor(fill, dtype=torch.float64)
        return torch.full(spec.slot_shape(j, tuple(p.shape), group), fill, dtype=dt)

    def _build_plan(self, params: list[torch.Tensor], gis: list[int], fresh: dict[int, int],
                    final: bool = True) -> None:
        st = self._stepper
        spec = st.spec
        where = {id(p): f"param_groups[{gi}]['params'][{j}]"
                 for gi, g in enumerate(self.param_groups) for j, p in enumerate(g["params"])}
        labels = [where[id(p)] for p in params]
        mode = self._numpy._torch_step
        if mode == "state":
            steps = [int(self.state[p]["step"]) if "step" in self.state[p] else 0 for p in params]
        elif mode == "group":
            steps = [int(self.param_groups[gi].get("step", 0)) for gi in gis]
        else:
            steps = [0] * len(params)
        states = [self._arrays(self.state[p], label) for p, label in zip(params, labels)]
        seeds = stochastic = None
        if spec.lowp:
            stochastic = [_lowp.options(g)[1] for g in self.param_groups]
            index = {id(q): n for n, q in enumerate(q for g in self.param_groups for q in g["params"])}
            seeds = _lowp.seeds(self.param_groups, gis, [index[id(p)] for p in params])
        emas = None
        if self._ema is not None:
            for p in params:
                if p not in self._ema:      # timm's ModelEmaV3 starts as a copy
                    self._ema[p] = p.detach().clone(memory_format=torch.contiguous_format)
            emas = [self._ema[p].numpy() for p in params]
        plan = st.build([_np(p) for p in params], states, gis, steps, fresh, labels, seeds, stochastic, emas=emas)
        plan.set_torch_params(params, torch._C._increment_version)
        if mode == "state" and final:
            steps_t = torch.tensor(steps, dtype=torch.float32)
            for i, p in enumerate(params):
                self.state[p]["step"] = steps_t[i]   # a view: one += advances every parameter's step
            self._steps = steps_t.numpy()            # += on the numpy view costs less than a torch op
        elif final:
            self._steps = None
        if final:
            if type(self.state) is not _State:
                self.state = _State(self.state)
            self._state_mark = (self.state, self.state.version)

    # ---- the loop's other passes (etakit._passes) --------------------------
    @property
    def ema(self) -> list[torch.Tensor | None] | None:
        """The EMA of each parameter (tensors in group order; None without ``ema_decay`` or before
        the first step); see :attr:`etakit.Optimizer.ema`."""
        if self._ema is None:
            return None
        return [self._ema.get(p) for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def swap_ema(self) -> None:
        """Exchange the parameters' values with their EMA's, in place (call again to swap back)."""
        with self._stepper:
            if not self._ema:
                raise RuntimeError("no EMA to swap: set ema_decay and take a step first")
            for p, e in self._ema.items():
                t = p.detach().clone()
                p.copy_(e)
                e.copy_(t)
            self._ema_swapped = not self._ema_swapped

    def ema_weights(self) -> _optim._EmaWeights[Self]:
        """Context manager: the parameters hold their EMA inside the block (as ``swap_ema``)."""
        return _optim._EmaWeights(self)

    def _loaded_loop(self, loop: Any) -> tuple[int, dict[torch.Tensor, torch.Tensor] | None]:
        """(skipped_steps, {parameter: EMA tensor} or None) from a loaded state dict's "loop" entry."""
        if loop is None:
            return 0, ({} if self._loop.ema_decay is not None else None)
        if not isinstance(loop, dict) or not set(loop) <= {"skipped_steps", "ema"}:
            raise ValueError("loaded 'loop' must be a dict with 'skipped_steps' and 'ema'")
        skipped = loop.get("skipped_steps", 0)
        if isinstance(skipped, bool) or not isinstance(skipped, numbers.Integral) or skipped < 0:
            raise ValueError(f"loaded loop['skipped_steps'] must be an integer >= 0, got {skipped!r}")
        ema = loop.get("ema")
        if ema is None:
            return int(skipped), ({} if self._loop.ema_decay is not None else None)
        params = [p for g in self.param_groups for p in g["params"]]
        if not isinstance(ema, dict):
            raise ValueError("loaded loop['ema'] must be a dict {parameter index: tensor}")
        _lowp.refuse_bf16_ema(params, "loaded loop['ema']")
        out = {}
        for key, e in ema.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) or \
                    not 0 <= key < len(params):  # type: ignore[operator]  # typeshed's numbers.Integral: no __ge__
                raise ValueError(f"loaded loop['ema'] has an entry for parameter {key!r}")
            p = params[key]
            if not isinstance(e, torch.Tensor) or tuple(e.shape) != tuple(p.shape) or not e.is_floating_point():
                got = f"{e.dtype} {tuple(e.shape)}" if isinstance(e, torch.Tensor) else type(e).__name__
                raise StateError(f"loaded loop['ema'][{key}] is {got}; expected a floating tensor of shape "
                                 f"{tuple(p.shape)}")
            out[p] = e.detach().to("cpu", p.dtype).clone(memory_format=torch.contiguous_format)
        return int(skipped), out

    global_clipnorm = _loop_property("global_clipnorm")
    norm_type = _loop_property("norm_type")
    nonfinite = _loop_property("nonfinite")
    ema_decay = _loop_property("ema_decay")
    ema_warmup = _loop_property("ema_warmup")
    ema_warmup_gamma = _loop_property("ema_warmup_gamma")
    ema_warmup_power = _loop_property("ema_warmup_power")
    ema_min_decay = _loop_property("ema_min_decay")
    ema_update_after_step = _loop_property("ema_update_after_step")

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim's __getstate__ keeps only defaults, state and groups; keep ours too,
        # less the plan (C pointers) and the lock, which are rebuilt
        d = dict(self.__dict__)
        for key in ("_stepper", "_get_hp", "_steps", "_state_mark"):
            d.pop(key, None)
        return d

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._stepper = Stepper(RuleSpec.of(self._numpy))
        self._get_hp = operator.itemgetter(*self._stepper.spec.kernel_keys)
        self._steps = None
        if type(self.state) is not _State:     # (torch's load_state_dict comes here with a new defaultdict)
            self.state = _State(self.state)
        self._state_mark = (None, -1)


# PyTorch's flags of the drop-ins, as their docstrings list them
_EXTRA_DOCS = {
    "foreach": ["foreach : bool or None, default None",
                "    Accepted and ignored (etakit has one fused implementation)."],
    "fused": ["fused : bool or None, default None", "    Accepted and ignored."],
    "capturable": ["capturable : bool, default False", "    Refused when True."],
    "differentiable": ["differentiable : bool, default False", "    Refused when True."],
}


def _parameters_after_params(doc: str) -> list[str]:
    """The lines of a numpy optimizer docstring's Parameters section after its ``params`` entry, dedented."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next(i for i in range(len(lines) - 1) if lines[i] == "Parameters" and lines[i + 1].startswith("---"))
    end = next((i for i in range(start + 2, len(lines) - 1) if lines[i] and re.fullmatch(r"-{3,}", lines[i + 1])),
               len(lines))
    section = lines[start + 2:end]
    while section and not section[-1].strip():
        section.pop()
    first = next(i for i in range(1, len(section)) if section[i] and not section[i][0].isspace())
    return section[first:]      # (the first entry is params, whose type and description are numpy's)


def _drop_in(np_cls: type[_optim.Optimizer]) -> type[_DropIn]:
    """The etakit.torch class of a numpy optimizer class: its signature plus PyTorch's extra flags."""
    name = np_cls.__name__
    sig = inspect.signature(np_cls.__init__)
    # (the numpy class's annotations, for arrays, are left out: the names, kinds and defaults are the drop-in's)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    extras = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in _EXTRAS
              if n not in sig.parameters]
    new_sig = sig.replace(parameters=params + extras, return_annotation=inspect.Signature.empty)

    def __init__(self: _DropIn, *args: Any, **kwargs: Any) -> None:
        bound = new_sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        defaults.pop("self")
        params_ = defaults.pop("params")
        defaults = {**defaults, **np_cls._implied}
        for k, v in _lowp.KEYS.items():     # group keys only when set (the groups stay torch.optim's)
            if k in defaults and type(defaults[k]) is type(v) and defaults[k] == v:
                del defaults[k]
        defaults.update(RuleSpec.of(np_cls).group_state_start(defaults, list(np_cls._group_state)))
        loop = _passes.LoopOptions(**{k: defaults.pop(k) for k in _passes.KEYS if k in defaults})
        _DropIn.__init__(self, params_, defaults)
        self._loop = loop

    __init__.__signature__ = new_sig  # type: ignore[attr-defined]  # (a function's attribute)
    matrix_only = RuleSpec.of(np_cls).matrix_only
    shape = "2, 3" if matrix_only else "3"
    modes = "opt.train(); " if hasattr(np_cls, "train") else ""   # an optimizer with modes steps in train mode
    tensors = "2-D tensors" if matrix_only else "tensors"
    entries = ["params : iterable of Tensor or of dict",
               f"    The parameters ({tensors}: dense, contiguous float32, float64 or bfloat16 on the CPU), or",
               "    parameter groups, as ``torch.optim`` takes them."]
    # (the numpy class's entries; none under python -OO, which drops docstrings)
    entries += _parameters_after_params(np_cls.__doc__) if np_cls.__doc__ is not None else []
    entries += [line for n, _ in _EXTRAS if n not in sig.parameters for line in _EXTRA_DOCS[n]]
    doc = (f"``{name}`` for PyTorch tensors: a ``torch.optim.Optimizer`` running etakit's fused kernels.\n\n"
           f"Same arguments, defaults, update and state names as :class:`etakit.{name}` (whose docstring\n"
           f"describes the rule), plus PyTorch's ``foreach``, ``fused`` (accepted, ignored: etakit has one\n"
           f"fused implementation), ``capturable`` and ``differentiable`` (refused when True).\n\n"
           f"Parameters\n----------\n" + "\n".join(entries) + "\n\n"
           f"Examples\n--------\n"
           f">>> import torch, etakit.torch\n"
           f">>> w = torch.nn.Parameter(torch.ones({shape}))\n"
           f">>> opt = etakit.torch.{name}([w], {np_cls._torch_example})\n"
           f">>> {modes}w.grad = torch.ones({shape}); opt.step(); opt.step()\n"
           f">>> bool((w < 1).all())\n"
           f"True\n")
    return type(name, (*np_cls._front_end_mixins, _DropIn), {"__init__": __init__, "_numpy": np_cls, "__doc__": doc,
                                                             "__module__": __name__, "__qualname__": name})


if TYPE_CHECKING:
    class _RuleDropIn(_DropIn):
        """A drop-in class as type checkers see it: made at import from its numpy class (_drop_in), it takes
        that class's hyperparameters and options, and PyTorch's flags, which its signature lists at run time."""

        def __init__(self, params: TorchParams, *args: Any, **kwargs: Any) -> None: ...

    class _ScheduleFreeDropIn(_optim._ScheduleFree, _RuleDropIn):
        """A schedule-free drop-in: train() and eval() too."""


# the drop-ins, one per numpy optimizer class, made below (their types for type checkers, which do not run
# the loop; tests/test_docs.py checks the list against etakit.OPTIMIZERS)
SGD: type[_RuleDropIn]
Adam: type[_RuleDropIn]
AdamW: type[_RuleDropIn]
RMSprop: type[_RuleDropIn]
Adagrad: type[_RuleDropIn]
Lion: type[_RuleDropIn]
NAdam: type[_RuleDropIn]
RAdam: type[_RuleDropIn]
Adamax: type[_RuleDropIn]
Adan: type[_RuleDropIn]
ADOPT: type[_RuleDropIn]
AdEMAMix: type[_RuleDropIn]
LAMB: type[_RuleDropIn]
LARS: type[_RuleDropIn]
Adadelta: type[_RuleDropIn]
ASGD: type[_RuleDropIn]
Rprop: type[_RuleDropIn]
Adafactor: type[_RuleDropIn]
Muon: type[_RuleDropIn]
DoG: type[_RuleDropIn]
LDoG: type[_RuleDropIn]
ScheduleFreeAdamW: type[_ScheduleFreeDropIn]
ScheduleFreeSGD: type[_ScheduleFreeDropIn]
ScheduleFreeRAdam: type[_ScheduleFreeDropIn]
Prodigy: type[_RuleDropIn]
DAdaptAdam: type[_RuleDropIn]
DAdaptSGD: type[_RuleDropIn]
DAdaptAdaGrad: type[_RuleDropIn]

for _cls in _optim.OPTIMIZERS.values():
    globals()[_cls.__name__] = _drop_in(_cls)
del _cls


# ---- the training loop's other passes (etakit.loop for tensors) ---------------
def _numpy_for_norm(g: torch.Tensor) -> npt.NDArray[Any]:
    """A numpy view (or exact float64 copy) of a gradient, for the deterministic norm."""
    g = g.detach()
    if g.is_sparse or g.layout != torch.strided:
        g = g.to_dense()
    if g.is_complex():
        g = g.abs()          # the norm of complex values is that of their moduli (as torch's vector_norm)
    if g.device.type == "cpu" and g.dtype in _DTYPES and not g.is_conj() and not g.is_neg():
        try:
            return g.numpy().reshape(-1)
        except (RuntimeError, TypeError):
            pass
    return g.to("cpu", torch.float64).numpy().reshape(-1)   # half, bfloat16, other devices: exact in float64


def get_total_norm(tensors: torch.Tensor | Iterable[torch.Tensor], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> torch.Tensor:
    """The total norm of ``tensors``, deterministically; ``torch.nn.utils.get_total_norm``.

    Per tensor, float64 sums over fixed blocks in a fixed order (as
    :func:`etakit.grad_norm`), then tensors in order: the result does not
    depend on the thread count.  Returned as a 0-d tensor of the tensors'
    promoted dtype, as torch returns it (``tensor(0.)`` for no tensors).

    Parameters
    ----------
    tensors : Tensor or iterable of Tensor
        The tensors (gradients, say), of any dtype, layout and device.
    norm_type : float, default 2.0
        The order of the norm; ``float('inf')`` for the max norm.
    error_if_nonfinite : bool, default False
        Raise RuntimeError (torch's message) when the norm is NaN or inf.
    foreach : bool or None, default None
        Accepted and ignored.

    Returns
    -------
    Tensor
        The total norm, a 0-d tensor.

    Examples
    --------
    >>> import torch, etakit.torch
    >>> etakit.torch.get_total_norm([torch.tensor([3.0]), torch.tensor([4.0])])
    tensor(5.)
    """
    from .loop import NONFINITE_MESSAGE, _norm_type, _total_norm

    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    else:
        tensors = list(tensors)
    p = _norm_type(norm_type)
    if not tensors:
        return torch.tensor(0.0)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    total = _total_norm([_numpy_for_norm(t) for t in tensors], p, RuntimeError)
    if dtype.is_complex:
        dtype = dtype.to_real()      # torch returns a real norm for complex tensors
    total_t = torch.tensor(total, dtype=torch.float64).to(device=tensors[0].device, dtype=dtype)
    if error_if_nonfinite and not bool(torch.isfinite(total_t)):
        raise RuntimeError(NONFINITE_MESSAGE.format(p))
    return total_t


def clip_grad_norm_(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> torch.Tensor:
    """Clip the gradients of ``parameters`` by their total norm; ``torch.nn.utils.clip_grad_norm_``.

    Same arguments, result and effect as torch's: the total norm of every
    ``p.grad`` (parameters without a gradient are skipped) as a 0-d tensor,
    every gradient multiplied in place by ``clamp(max_norm / (total_norm +
    1e-6), max=1.0)``, ``RuntimeError`` (nothing scaled) for a NaN or inf
    norm under ``error_if_nonfinite``, and torch's error for the inf or a
    negative order of an empty gradient.  The difference: the norm is
    formed deterministically in float64 (:func:`get_total_norm`), so it is
    the same whatever the thread count and at least as accurate as torch's.
    ``foreach`` is accepted and ignored.

    Parameters
    ----------
    parameters : Tensor or iterable of Tensor
        The parameters whose ``.grad`` is clipped (those without one are
        skipped).
    max_norm : float
        The largest total norm after clipping.
    norm_type : float, default 2.0
        The order of the norm; ``float('inf')`` for the max norm.
    error_if_nonfinite : bool, default False
        Raise RuntimeError (nothing scaled) when the norm is NaN or inf.
    foreach : bool or None, default None
        Accepted and ignored.

    Returns
    -------
    Tensor
        The total norm before clipping, a 0-d tensor.

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
    >>> etakit.torch.clip_grad_norm_([w], max_norm=1.0)
    tensor(5.)
    >>> w.grad
    tensor([0.6000, 0.8000])
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    if not grads:
        return total_norm
    max_norm = float(max_norm)
    with torch.no_grad():
        clip_coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)   # in the norm's dtype, as torch
        for g in grads:
            g.mul_(clip_coef.to(g.device))
    return total_norm


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around a torch optimizer, for ``etakit.torch``'s drop-ins.

    The tensor counterpart of :class:`etakit.Lookahead`: every ``k`` steps of
    a group, the slow weights of its parameters that have a gradient move
    toward the fast ones (``slow += alpha * (fast - slow)``) and the fast
    weights restart from them.  pytorch_optimizer's ``Lookahead``
    (``pullback_momentum="none"``) step for step: same formula, same
    ``state_dict`` layout (``{"lookahead_state": {(group, index):
    {"slow_params": tensor}}, "base_optimizer": ...}``), plus the counters.
    ``param_groups`` are the inner optimizer's, so ``torch.optim.lr_scheduler``
    drives it.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The inner optimizer, e.g. ``etakit.torch.AdamW``.
    k : int, default 5
        Fast steps between slow-weight updates, >= 1.
    alpha : float, default 0.5
        Step of the slow weights toward the fast ones, in [0, 1].

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = etakit.torch.Lookahead(etakit.torch.SGD([w], lr=0.1), k=2)
    >>> for _ in range(2):
    ...     w.grad = torch.ones(2); opt.step()
    >>> w.detach()
    tensor([-0.1000, -0.1000])
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        from collections import OrderedDict, defaultdict

        from .loop import _check_k_alpha

        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer (an etakit.torch drop-in, say), got "
                            f"{type(optimizer).__name__}; for numpy optimizers use etakit.Lookahead")
        self.k, self.alpha = _check_k_alpha(k, alpha)
        self.optimizer = optimizer
        self.defaults = {**optimizer.defaults, "lookahead_k": self.k, "lookahead_alpha": self.alpha}
        self.state = defaultdict(dict)
        for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
                     "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
                     "_optimizer_load_state_dict_post_hooks"):
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self._counters = [0] * len(optimizer.param_groups)
        for group in self.param_groups:
            self._init_group(group)

    @property
    def param_groups(self) -> list[Group]:  # type: ignore[override]  # (torch.optim's is an attribute)
        """The inner optimizer's parameter groups (the same dicts: ``torch.optim.lr_scheduler`` drives them).

        Examples
        --------
        >>> import torch, etakit.torch
        >>> inner = etakit.torch.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        >>> etakit.torch.Lookahead(inner).param_groups is inner.param_groups
        True
        """
        return self.optimizer.param_groups

    def _init_group(self, group: Group) -> None:
        for p in group["params"]:
            if "slow_params" not in self.state[p]:
                self.state[p]["slow_params"] = p.detach().clone()

    def add_param_group(self, param_group: Group) -> None:
        """Add a group to the inner optimizer; its slow weights start as copies, its counter at 0.

        Parameters
        ----------
        param_group : dict
            ``{"params": [tensors], **hyperparameters}``, as the inner
            optimizer's ``add_param_group`` takes it.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> opt = etakit.torch.Lookahead(etakit.torch.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1))
        >>> b = torch.nn.Parameter(torch.zeros(3))
        >>> opt.add_param_group({"params": [b], "lr": 0.01})
        >>> len(opt.param_groups), sorted(opt.state[b])
        (2, ['slow_params'])
        """
        self.optimizer.add_param_group(param_group)
        self._init_group(self.param_groups[-1])
        self._counters.append(0)

    def train(self) -> None:
        """The wrapped optimizer's ``train()`` (schedule-free optimizers: the point gradients are taken at).

        Examples
        --------
        >>> import torch, etakit.torch
        >>> opt = etakit.torch.Lookahead(etakit.torch.ScheduleFreeSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1))
        >>> opt.train(); opt.param_groups[0]["train_mode"]
        True
        """
        self._inner_mode("train")

    def eval(self) -> None:
        """The wrapped optimizer's ``eval()`` (schedule-free optimizers: the averaged weights).

        Examples
        --------
        >>> import torch, etakit.torch
        >>> opt = etakit.torch.Lookahead(etakit.torch.ScheduleFreeSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1))
        >>> opt.train(); opt.eval(); opt.param_groups[0]["train_mode"]
        False
        """
        self._inner_mode("eval")

    def _inner_mode(self, name: str) -> None:
        f = getattr(self.optimizer, name, None)
        if f is None:
            raise AttributeError(f"{type(self.optimizer).__name__} has no {name}() (only optimizers with modes, "
                                 "such as the schedule-free ones, do)")
        f()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default True
            Set the gradients to None rather than to zeros.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.ones(2)
        >>> etakit.torch.Lookahead(etakit.torch.SGD([w], lr=0.1)).zero_grad(); print(w.grad)
        None
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def _update(self, group: Group) -> None:
        w = 1.0 - self.alpha
        for p in group["params"]:
            if p.grad is None:
                continue
            slow = self.state[p]["slow_params"]
            p.lerp_(slow, w)
            slow.copy_(p)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]  # (torch.optim: two overloads)
        """One step of the inner optimizer, then each group's slow-weight update at its k-th step.

        Parameters
        ----------
        closure : callable, optional
            Passed to the inner optimizer's ``step`` (re-evaluates the model
            and returns the loss).

        Returns
        -------
        float or None
            What the inner step returns: the closure's loss, or None.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> w = torch.nn.Parameter(torch.ones(1))
        >>> opt = etakit.torch.Lookahead(etakit.torch.SGD([w], lr=1.0), k=1, alpha=0.25)
        >>> w.grad = torch.ones(1); opt.step()    # fast to 0, slow 1 + 0.25 * (0 - 1)
        >>> w.detach()
        tensor([0.7500])
        """
        skipped = getattr(self.optimizer, "skipped_steps", 0)
        loss = self.optimizer.step(closure)
        if getattr(self.optimizer, "skipped_steps", 0) != skipped:
            return loss         # the inner step was skipped (a non-finite gradient): no step to count
        for gi, group in enumerate(self.param_groups):
            self._counters[gi] += 1
            if self._counters[gi] >= self.k:
                self._counters[gi] = 0
                self._update(group)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The slow weights, the inner optimizer's state dict and the counters, as pytorch_optimizer's Lookahead.

        Returns
        -------
        dict
            ``{"lookahead_state": {(group, index): {"slow_params": tensor}},
            "base_optimizer": inner state dict (each group with its
            ``counter``), "lookahead_counters": [per group]}``.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = etakit.torch.Lookahead(etakit.torch.SGD([w], lr=0.1), k=2)
        >>> w.grad = torch.ones(2); opt.step()
        >>> sd = opt.state_dict(); sorted(sd), sd["lookahead_counters"]
        (['base_optimizer', 'lookahead_counters', 'lookahead_state'], [1])
        """
        slow = {(gi, j): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.state[p].items()}
                for gi, g in enumerate(self.param_groups) for j, p in enumerate(g["params"]) if p in self.state}
        base = self.optimizer.state_dict()
        # the counters also as pytorch_optimizer keeps them ('counter' in the base groups), so that
        # its Lookahead resumes from this checkpoint too
        base = {**base, "param_groups": [{**g, "counter": c} for g, c in zip(base["param_groups"], self._counters)]}
        return {"lookahead_state": slow, "base_optimizer": base, "lookahead_counters": list(self._counters)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (or pytorch_optimizer's Lookahead's); checked before anything changes.

        Parameters
        ----------
        state_dict : dict
            A :meth:`state_dict` of a Lookahead over parameters of the same
            shapes, or pytorch_optimizer's Lookahead's.

        Examples
        --------
        >>> import torch, etakit.torch
        >>> def make():
        ...     return etakit.torch.Lookahead(etakit.torch.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), k=2)
        >>> opt = make()
        >>> opt.param_groups[0]["params"][0].grad = torch.ones(2); opt.step()
        >>> opt2 = make(); opt2.load_state_dict(opt.state_dict()); opt2.state_dict()["lookahead_counters"]
        [1]
        """
        if not isinstance(state_dict, dict) or "lookahead_state" not in state_dict \
                or "base_optimizer" not in state_dict:
            raise ValueError("state_dict must be a Lookahead state dict: {'lookahead_state': ..., "
                             "'base_optimizer': ...}")
        saved = state_dict["lookahead_state"]
        base = state_dict["base_optimizer"]
        restored = {}
        for gi, g in enumerate(self.param_groups):
            for j, p in enumerate(g["params"]):
                entry = saved.get((gi, j))
                if not isinstance(entry, dict) or not isinstance(entry.get("slow_params"), torch.Tensor):
                    raise ValueError(f"state_dict['lookahead_state'] has no slow_params for parameter {j} "
                                     f"of group {gi}")
                if entry["slow_params"].shape != p.shape:
                    raise ValueError(f"state_dict['lookahead_state'][({gi}, {j})]['slow_params'] has shape "
                                     f"{tuple(entry['slow_params'].shape)}; the parameter has {tuple(p.shape)}")
                restored[p] = entry
        if len(restored) != len(saved):
            raise ValueError(f"state_dict['lookahead_state'] has {len(saved)} entries; the optimizer has "
                             f"{len(restored)} parameters")
        counters = state_dict.get("lookahead_counters")
        if counters is None:     # pytorch_optimizer keeps them in the base groups, as 'counter'
            counters = [g.get("counter", 0) for g in base.get("param_groups", [])]
        base = {**base, "param_groups": [{k: v for k, v in g.items() if k != "counter"}
                                         for g in base.get("param_groups", [])]}
        counters = list(counters)
        if len(counters) != len(self.param_groups) or any(
                isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 for c in counters):
            raise ValueError(f"the Lookahead counters must be {len(self.param_groups)} ints >= 0, got {counters!r}")
        self.optimizer.load_state_dict(base)
        from collections import defaultdict

        self.state = defaultdict(dict, {p: {k: (v.to(device=p.device, dtype=p.dtype).clone()
                                                if isinstance(v, torch.Tensor) else v) for k, v in e.items()}
                                        for p, e in restored.items()})
        self._counters = [int(c) for c in counters]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Lookahead({self.optimizer!r}, k={self.k}, alpha={self.alpha})"


__all__ += ["clip_grad_norm_", "get_total_norm", "Lookahead"]
