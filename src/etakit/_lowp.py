"""Low-precision optimizer state: the group keys, the formats and the conversions.

A group's ``state_dtype`` says how the element-wise state of its float32
parameters is kept (the C engine decodes it to float32 for each step and
encodes it back, see csrc/lowp.c):

- ``"float32"`` (the default): in the parameter's own dtype, as before
  (float64 parameters keep float64 state);
- ``"bfloat16"``: ``ml_dtypes.bfloat16`` arrays (numpy has no bfloat16; the
  ml_dtypes type is the one JAX uses, so the arrays print, convert with
  ``astype(np.float32)`` and save like any numpy array; etakit.torch keeps
  ``torch.bfloat16`` tensors), rounded to nearest even, or stochastically
  with ``stochastic_rounding=True``, from the stream ``sr_seed`` (an integer,
  default 0: each seed is its own reproducible sequence of roundings);
- ``"int8"``: 8-bit blockwise, bitsandbytes' format: per buffer ``<name>``
  the uint8 codes (the parameter's shape) and ``<name>_absmax``, one float32
  scale per 256 elements.  Parameters with fewer than ``min_8bit_size``
  elements (default 4096, as bitsandbytes) keep float32 state.

The format of a tensor's state is read from its arrays (the state is the
truth); when a group's ``state_dtype`` changes, or a checkpoint in another
format is loaded, the state is converted through float32.

bfloat16 parameters (``ml_dtypes.bfloat16`` arrays, ``torch.bfloat16``
tensors), for the rules that can keep low-precision state: the step decodes
parameter and gradient to float32, runs the float32 update and writes the new
value back, with Kahan compensation (``kahan``: ``None``, the default, means
Kahan unless ``stochastic_rounding``, as optimi's ``kahan_sum=None``; the
compensation is the state buffer ``kahan_comp``, bfloat16 of the parameter's
shape), with stochastic rounding (``stochastic_rounding=True``, from the
stream ``sr_seed``), or to nearest even (``kahan=False``, as torch.optim).
Their state is float32 under ``state_dtype="float32"``.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt

from . import _core, reference
from .errors import StateError

if TYPE_CHECKING:
    import torch

    from ._step import RuleSpec

# a parameter: a numpy array, or a tensor of etakit.torch
Param = Union[npt.NDArray[Any], "torch.Tensor"]
# a tensor's state: {slot name: array} (with "<name>_absmax" scales for 8-bit codes)
State = dict[str, Any]

KEYS = {"state_dtype": "float32", "stochastic_rounding": False, "min_8bit_size": 4096, "sr_seed": 0, "kahan": None}
COMP = "kahan_comp"     # the state buffer of the Kahan compensation of a bfloat16 parameter
DTYPES = ("float32", "bfloat16", "int8")
FULL, BF16, Q8 = 0, 2, 3
_NAMES = {FULL: "float32", BF16: "bfloat16", Q8: "int8"}


def bfloat16() -> np.dtype[Any]:
    """The numpy dtype of bfloat16 state (``ml_dtypes.bfloat16``)."""
    try:
        import ml_dtypes
    except ImportError:     # pragma: no cover - ml_dtypes is installed with etakit[lowp]
        raise ImportError("state_dtype='bfloat16' keeps numpy state as ml_dtypes.bfloat16 arrays: "
                          "pip install ml_dtypes") from None
    return np.dtype(ml_dtypes.bfloat16)


# Why the rules that adapt their own step size keep float32 state (etakit._lowp.check says it).
_WHY_NOT = {
    "prodigy": "its step size d is estimated from sums over its state (s, and p0, a copy of the initial "
               "parameters) in a pass of its own before the update; low-precision state is decoded and "
               "encoded within one element-wise pass, and the rounding of p0 would enter d",
    "dadapt_adam": "its step size d is estimated from sums over its state (s) in a pass of its own before the "
                   "update; low-precision state is decoded and encoded within one element-wise pass",
    "dadapt_sgd": "its step size d is estimated from sums over its state (s, and x0, a copy of the initial "
                  "parameters) in a pass of its own; low-precision state is decoded and encoded within one "
                  "element-wise pass, and the rounding of x0 would enter d",
    "dadapt_adagrad": "its step size d is estimated from sums over its state (sk, alphak, and x0, a copy of the "
                      "initial parameters) in a pass of its own; low-precision state is decoded and encoded "
                      "within one element-wise pass, and the rounding of x0 would enter d",
    "dog": "its step size is the largest distance from the initial parameters (init_buffer, a copy of them), "
           "reduced in a pass of its own; the rounding of that copy would enter every step size",
    "schedulefree_adamw": "z is an iterate that the parameters follow, not a moment: rounded to bfloat16 or "
                          "8 bits at every step it loses updates smaller than its rounding (a parameter-like "
                          "buffer needs stochastic rounding or Kahan compensation, as bfloat16 parameters do)",
}
_WHY_NOT["schedulefree_sgd"] = _WHY_NOT["schedulefree_radam"] = _WHY_NOT["schedulefree_adamw"]


def options(group: Mapping[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """(state_dtype, stochastic_rounding, min_8bit_size, sr_seed, kahan) of a group (defaults for missing keys)."""
    return (group.get("state_dtype", "float32"), group.get("stochastic_rounding", False),
            group.get("min_8bit_size", 4096), group.get("sr_seed", 0), group.get("kahan", None))


def is_bf16(p: Param) -> bool:
    """Whether a parameter (numpy array or torch tensor) is bfloat16."""
    return str(p.dtype) in ("bfloat16", "torch.bfloat16")


def full_dtype(dtype: Any) -> Any:
    """The dtype of full-precision state for parameters of ``dtype`` (float32 for bfloat16 ones)."""
    return np.dtype(np.float32) if str(dtype) == "bfloat16" else dtype


def keeps_comp(p: Any, group: Mapping[str, Any]) -> bool:
    """Whether parameter ``p`` of ``group`` keeps a Kahan compensation: a bfloat16 parameter whose group
    asks for Kahan (``kahan``, or its default ``None`` without ``stochastic_rounding``)."""
    k = options(group)[4]
    return is_bf16(p) and (bool(k) if k is not None else not options(group)[1])


def seeds(groups: Sequence[Mapping[str, Any]], group_of: Sequence[int], index: Sequence[int]) -> list[int] | None:
    """The stochastic-rounding streams of a plan's tensors (None if no group rounds stochastically):
    tensor ``t`` of group ``group_of[t]`` at position ``index[t]`` among all the optimizer's
    parameters (its state_dict index) draws from ``tensor_seed(sr_seed of its group, position)``,
    so the bits depend on neither the thread count nor which parameters have gradients."""
    if not any(options(g)[1] for g in groups):
        return None
    return [reference.tensor_seed(options(groups[gi])[3], i) for gi, i in zip(group_of, index)]


def check(group: Mapping[str, Any], where: str, spec: RuleSpec) -> None:
    """Refuse bad low-precision keys of a group (TypeError, ValueError) before anything is written."""
    dt, sr, m, seed, kahan = options(group)
    if not isinstance(dt, str) or dt not in DTYPES:
        raise ValueError(f"Invalid state_dtype for {where}: {dt!r} (expected one of {', '.join(map(repr, DTYPES))})")
    if dt != "float32" and not spec.lowp:
        why = _WHY_NOT.get(spec.rule)
        raise ValueError(f"{where}: {spec.name} cannot keep {dt} state: " + (why or (
            "only the rules whose step is one element-wise pass can (SGD, Adam, AdamW, RMSprop, Adagrad, Lion, "
            "NAdam, RAdam, Adamax, ADOPT, AdEMAMix, Adadelta, ASGD, Rprop)")))
    if dt == "int8" and isinstance(group.get("centered"), (bool, np.bool_)) and group["centered"]:
        # square_avg - grad_avg**2 of two independently quantised moments can come out negative
        raise ValueError(f"{where}: centered {spec.name} cannot keep int8 state (the variance estimate "
                         "square_avg - grad_avg**2 of two 8-bit moments can turn negative; bitsandbytes refuses "
                         "it too); use state_dtype='bfloat16' or centered=False")
    if not isinstance(sr, (bool, np.bool_)):
        raise TypeError(f"{where}: stochastic_rounding must be a bool, got {type(sr).__name__} {sr!r}")
    if sr and dt not in ("bfloat16", "float32"):
        raise ValueError(f"{where}: stochastic_rounding applies to bfloat16 state and bfloat16 parameters "
                         f"(got state_dtype={dt!r})")
    if kahan is not None and not isinstance(kahan, (bool, np.bool_)):
        raise TypeError(f"{where}: kahan must be None, True or False, got {type(kahan).__name__} {kahan!r}")
    if kahan and sr:
        raise ValueError(f"{where}: kahan=True and stochastic_rounding=True both say how bfloat16 parameters are "
                         "rounded; choose one")
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, numbers.Integral) or m < 0:
        raise ValueError(f"Invalid min_8bit_size for {where}: {m!r} (expected an integer >= 0)")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or \
            not 0 <= seed < 2**64:  # type: ignore[operator]  # typeshed's numbers.Integral has no __ge__
        raise ValueError(f"Invalid sr_seed for {where}: {seed!r} (expected an integer in [0, 2**64))")
    if seed and not sr:
        raise ValueError(f"{where}: sr_seed seeds stochastic rounding; set stochastic_rounding=True with it")


def check_params(group: Mapping[str, Any], params: Sequence[Param], labels: Sequence[str],
                 spec: RuleSpec | None = None) -> None:
    """Low-precision state needs float32 or bfloat16 parameters, bfloat16 parameters a rule that can keep
    low-precision state (``spec``), and stochastic rounding something to round (numpy arrays or torch
    tensors)."""
    dt, sr = options(group)[:2]
    bf16 = False
    for p, label in zip(params, labels):
        if is_bf16(p):
            bf16 = True
            if spec is not None and not spec.lowp:
                why = _WHY_NOT.get(spec.rule, "its step is not one element-wise pass")
                raise TypeError(f"{label} is bfloat16; {spec.name} updates float32 or float64 parameters only: "
                                f"{why}")
        elif dt != "float32" and str(p.dtype) not in ("float32", "torch.float32"):
            raise TypeError(f"{label} has dtype {p.dtype}; state_dtype={dt!r} needs float32 (or bfloat16) "
                            "parameters")
    if sr and dt != "bfloat16" and not bf16 and params:
        raise ValueError(f"the group of {labels[0]} has stochastic_rounding=True, which applies to "
                         "state_dtype='bfloat16' and to bfloat16 parameters; it has neither")


def target(group: Mapping[str, Any], size: int) -> int:
    """The format a parameter of ``size`` elements keeps its state in under ``group``."""
    dt, _, m, _, _ = options(group)
    if dt == "bfloat16":
        return BF16
    if dt == "int8":
        return Q8 if size >= m else FULL
    return FULL


def format_of(state: State, spec: RuleSpec) -> int | None:
    """The format of a tensor's state dict ({name: numpy array}) from its arrays' dtypes."""
    for j, s in enumerate(spec.slots):
        a = state.get(s["name"])
        if a is None or s["shape"] == "scalar":
            continue
        if a.dtype == np.uint8:
            return Q8
        if a.dtype.itemsize == 2:
            return BF16
        return FULL
    return None


def decode(state: State, spec: RuleSpec, dtype: npt.DTypeLike) -> dict[str, npt.NDArray[Any]]:
    """A tensor's state with its element-wise buffers in float (``dtype``), scales dropped."""
    out = {}
    for j, s in enumerate(spec.slots):
        name = s["name"]
        a = state.get(name)
        if a is None:
            continue
        if s["shape"] != "scalar" and a.dtype == np.uint8:
            a = _core.q8_decode(np.ascontiguousarray(a).reshape(-1),
                                np.ascontiguousarray(state[name + "_absmax"], dtype=np.float32),
                                not s["nonneg"]).reshape(a.shape)
        elif s["shape"] != "scalar" and a.dtype.itemsize == 2:
            a = reference.bf16_decode(a.view(np.uint16)).reshape(a.shape)
        out[name] = np.array(a, dtype=np.float64 if s["shape"] == "scalar" else dtype, order="C", copy=True)
    return out


def encode(state: State, spec: RuleSpec, fmt: int, raw: bool = False) -> State:
    """A tensor's float state in format ``fmt`` (new arrays; bfloat16 as uint16 bits if ``raw``, which
    needs no ml_dtypes)."""
    if fmt == FULL:
        return state
    out: dict[str, npt.NDArray[Any]] = {}
    for j, s in enumerate(spec.slots):
        name = s["name"]
        a = state.get(name)
        if a is None:
            continue
        if s["shape"] == "scalar":
            out[name] = a
        elif fmt == BF16:
            bits = _core.bf16_encode(np.ascontiguousarray(a, dtype=np.float32))
            out[name] = bits if raw else bits.view(bfloat16())
        else:
            codes, absmax = _core.q8_encode(np.ascontiguousarray(a, dtype=np.float32), not s["nonneg"])
            out[name], out[name + "_absmax"] = codes, absmax
    return out


def _array_format(a: npt.NDArray[Any]) -> int:
    return Q8 if a.dtype == np.uint8 else BF16 if a.dtype.itemsize == 2 else FULL


def convert(state: State, spec: RuleSpec, fmt: int, dtype: npt.DTypeLike, raw: bool = False) -> State:
    """``state`` with every element-wise buffer in format ``fmt`` (``state`` itself if it is already;
    ``raw``: see ``encode``); a Kahan compensation is kept as it is."""
    if all(_array_format(state[s["name"]]) == fmt for s in spec.slots
           if s["shape"] != "scalar" and state.get(s["name"]) is not None):
        return state
    out = encode(decode(state, spec, full_dtype(dtype)), spec, fmt, raw)
    if COMP in state:
        out[COMP] = state[COMP]
    return out


def plan_arrays(state: State, spec: RuleSpec) -> tuple[int, tuple[Any, ...], tuple[Any, ...] | None]:
    """What Plan.set_tensor takes for a tensor's state: (format, slot arrays, scales or None)."""
    fmt = format_of(state, spec) or FULL
    arrays: list[Any] = []
    scales: list[Any] | None = [] if fmt == Q8 else None
    for s in spec.slots:
        a = state.get(s["name"])
        if a is not None and fmt == BF16 and s["shape"] != "scalar":
            a = a.view(np.uint16)
        arrays.append(a)
        if scales is not None:
            scales.append(state.get(s["name"] + "_absmax"))
    return fmt, tuple(arrays), (tuple(scales) if scales is not None else None)


def check_loaded(entry: dict[str, Any], spec: RuleSpec, shape: Sequence[int], label: str) -> None:
    """Check the low-precision buffers of a loaded state entry ({name: array}); StateError naming the
    first that is not well formed (a bfloat16 buffer, or uint8 codes with float32 scales >= 0)."""
    n = int(np.prod(shape))
    for s in spec.slots:
        name = s["name"]
        a = entry.get(name)
        if a is None or s["shape"] == "scalar":
            if name + "_absmax" in entry and (a is None or s["shape"] == "scalar"):
                raise StateError(f"{label}[{name + '_absmax'!r}] has no 8-bit codes {name!r} to scale")
            continue
        a = np.asarray(a)
        if a.dtype == np.uint8:
            sc = entry.get(name + "_absmax")
            if sc is None:
                raise StateError(f"{label}[{name!r}] holds 8-bit codes (uint8) without their scales "
                                 f"{name + '_absmax'!r}")
            sc = np.asarray(sc)
            if sc.dtype != np.float32 or sc.shape != (-(-n // 256),):
                raise StateError(f"{label}[{name + '_absmax'!r}] is {sc.dtype} of shape {sc.shape}; expected "
                                 f"float32 of shape {(-(-n // 256),)} (one scale per 256 elements)")
            if (sc < 0).any():     # (NaN and inf are what a non-finite gradient leaves: they load)
                raise StateError(f"{label}[{name + '_absmax'!r}] holds a negative scale")
        elif name + "_absmax" in entry:
            raise StateError(f"{label}[{name + '_absmax'!r}] scales {name!r}, which is {a.dtype}, not 8-bit "
                             "codes (uint8)")
        elif a.dtype.kind == "V" and a.dtype.itemsize == 2:
            # bfloat16 saved by numpy (np.save, np.savez, etakit.save) comes back as raw 2-byte voids
            entry[name] = a.view(bfloat16())
        elif a.dtype.kind != "f" and a.dtype != bfloat16():
            raise TypeError(f"{label}[{name!r}] has dtype {a.dtype}; expected floating-point, bfloat16 or "
                            "uint8 codes")
    kinds = {_kind(np.asarray(entry[s["name"]]).dtype) for s in spec.slots
             if s["shape"] != "scalar" and entry.get(s["name"]) is not None}
    if len(kinds) > 1:
        raise StateError(f"{label} mixes state formats ({', '.join(sorted(kinds))})")


def loaded_comp(v: Any, p: npt.NDArray[Any], label: str) -> npt.NDArray[Any]:
    """A loaded Kahan compensation for bfloat16 parameter ``p``: a new bfloat16 array of its shape
    (StateError for another shape, a non-floating dtype, or a value that is not finite in bfloat16)."""
    a = np.asarray(v)
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:      # bfloat16 saved by numpy (np.save, etakit.save)
        a = a.view(p.dtype)
    if a.shape != p.shape or (a.dtype != p.dtype and a.dtype.kind != "f"):
        raise StateError(f"{label} is {a.dtype} {a.shape}; expected bfloat16 of shape {p.shape}")
    with np.errstate(over="ignore"):
        out = np.array(a, dtype=p.dtype, order="C", copy=True)
    if not np.isfinite(out.astype(np.float32)).all():
        raise StateError(f"{label} holds inf or NaN (in bfloat16); a compensation is a small finite rounding error")
    return out


def adapt_loaded_group(group: dict[str, Any], params: Sequence[Param]) -> dict[str, Any]:
    """A loaded group for the parameters it goes to: ``stochastic_rounding`` (and its ``sr_seed``) dropped
    when it has nothing to round (a checkpoint of bfloat16 parameters loaded into float32 ones)."""
    if options(group)[1] and options(group)[0] != "bfloat16" and not any(map(is_bf16, params)):
        group = {k: v for k, v in group.items() if k not in ("stochastic_rounding", "sr_seed")}
    return group


def refuse_bf16_ema(params: Sequence[Param], what: str) -> None:
    """The EMA of bfloat16 parameters is not supported: ValueError naming ``what`` asked for one."""
    if any(map(is_bf16, params)):
        raise ValueError(f"{what}: the EMA of bfloat16 parameters is not supported (an EMA kept in bfloat16 loses "
                         "the small moves it averages); keep float32 parameters for it")


def _kind(dtype: np.dtype[Any]) -> str:
    return "int8" if dtype == np.uint8 else "bfloat16" if dtype.itemsize == 2 else "float"
