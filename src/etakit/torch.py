"""Drop-in replacements for ``torch.optim`` on CPU, running etakit's fused kernels.

``etakit.torch.SGD``, ``Adam``, ``AdamW``, ``RMSprop`` and ``Adagrad`` are
``torch.optim.Optimizer`` subclasses with PyTorch's signatures, defaults,
update rules and state layout (``step``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, ``momentum_buffer``, ``square_avg``, ``grad_avg``,
``sum``), so checkpoints move both ways between ``torch.optim.AdamW`` and
``etakit.torch.AdamW``, and ``torch.optim.lr_scheduler`` drives them.

Parameters, gradients and optimizer state are used in place, zero-copy: the
kernels write straight into the tensors' memory, all parameters of a step in
one C call with the GIL released.  Supported: dense, contiguous float32 or
float64 CPU tensors.  Parameters without a gradient are skipped, as in PyTorch.

torch is imported by this module only (``import etakit.torch``).

Examples
--------
>>> import torch, etakit.torch
>>> model = torch.nn.Linear(4, 1)
>>> opt = etakit.torch.AdamW(model.parameters(), lr=1e-2)
>>> loss = model(torch.ones(8, 4)).pow(2).mean()
>>> loss.backward(); opt.step(); opt.zero_grad()
"""
import operator

import torch

from . import _core
from . import optim as _optim

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

_DTYPES = (torch.float32, torch.float64)


def _check_param(p, where):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
    supported = "etakit.torch supports dense, contiguous float32 or float64 CPU tensors"
    if p.device.type != "cpu":
        raise ValueError(f"{where} is on {p.device}; {supported} (use torch.optim for {p.device.type})")
    if p.is_sparse or p.layout != torch.strided:
        raise ValueError(f"{where} has layout {p.layout}; {supported}")
    if p.is_complex():
        raise TypeError(f"{where} is complex ({p.dtype}); {supported}")
    if p.dtype not in _DTYPES:
        raise TypeError(f"{where} has dtype {p.dtype}; {supported} (half precision is not supported)")
    if not p.is_contiguous():
        raise ValueError(f"{where} is not contiguous (strides {p.stride()}); {supported}: the update is in place "
                         "and never works on a copy")


class _Optimizer(torch.optim.Optimizer):
    """Shared machinery: validation, PyTorch-layout state, one C call per step."""

    _etakit = None          # the numpy optimizer class whose rules and checks apply
    _state_names = ()       # PyTorch's names of the C state slots 0..2
    _has_step = True

    def __init__(self, params, defaults):
        for flag in ("capturable", "differentiable"):
            if defaults.get(flag):
                raise ValueError(f"etakit.torch does not support {flag}=True")
        self._validator = object.__new__(self._etakit)   # only its class attributes are used
        self._get_hp = operator.itemgetter(*self._etakit._hp_keys)
        self._plan = None
        self._plan_key = None
        self._steps = None
        self._needs_cache = None
        self._state_version = 0
        self._hp_cache = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        for j, p in enumerate(group["params"]):
            _check_param(p, f"param_groups[{gi}]['params'][{j}]")
        self._validator._validate_group(_floats(group), f"param_groups[{gi}]")
        self._plan = None

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._state_version += 1
        self._hp_cache = None

    def state_dict(self):
        sd = super().state_dict()
        # "step" tensors are views into one buffer the kernel advances: hand out
        # copies, in new dicts (torch's state_dict shares the per-parameter dicts)
        sd["state"] = {k: ({**st, "step": st["step"].clone()} if isinstance(st.get("step"), torch.Tensor) else st)
                       for k, st in sd["state"].items()}
        return sd

    def _needed(self, group):
        return [n for n in self._validator._needed_state(_floats(group)) if n in self._state_names]

    def _init_state(self, name, p, group):
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step for every parameter that has a gradient (one C call)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hp = tuple(self._get_hp(_floats(g)) for g in self.param_groups)
        params, gis, grads = [], [], []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    params.append(p)
                    gis.append(gi)
                    grads.append(g)
        if not params:
            return loss
        if hp != self._hp_cache:
            packed = [self._validator._validate_group(_floats(g), f"param_groups[{gi}]")
                      for gi, g in enumerate(self.param_groups)]
            needs = tuple(tuple(self._needed(g)) for g in self.param_groups)
            if needs != self._needs_cache:   # an option that needs new state (amsgrad, momentum...)
                self._plan_key, self._needs_cache = None, needs
        key = (self._state_version, tuple(map(id, params)), tuple(gis))
        if key != self._plan_key:
            self._check_grads(params, gis, grads)
            fresh = self._ensure_state(params, gis)
            self._build_plan(params, gis, fresh)
            self._plan_key = (self._state_version, key[1], key[2])
            packed = [self._validator._validate_group(_floats(g), f"param_groups[{gi}]")
                      for gi, g in enumerate(self.param_groups)]
        if hp != self._hp_cache:
            for gi, v in enumerate(packed):
                self._plan.set_hparams(gi, v)
            self._hp_cache = hp
        try:
            r = self._plan.run_torch(params, grads)
        except RuntimeError:   # is_contiguous() on a sparse gradient, say
            r = 0
        if r == -4:            # a parameter's memory was replaced (p.data = ...)
            self._plan_key = None
            return self.step() if closure is None else self._rerun(loss)
        if r != -1:
            self._check_grads(params, gis, grads)
            r = self._plan.run([g.contiguous().numpy() for g in grads])
            if r != -1:
                raise ValueError(f"the gradient of parameter {r} (counting those with gradients) shares memory "
                                 "with a parameter or optimizer state")
        if self._steps is not None:
            self._steps += 1
        return loss

    def _rerun(self, loss):
        self.step()
        return loss

    def _check_grads(self, params, gis, grads):
        for p, gi, g in zip(params, gis, grads):
            where = f"the gradient of a parameter of param_groups[{gi}]"
            if g.is_sparse or g.layout != torch.strided:
                raise ValueError(f"{where} is sparse; etakit.torch supports dense gradients only")
            if g.dtype != p.dtype or g.shape != p.shape or g.device != p.device:
                raise ValueError(f"{where} is {g.dtype} {tuple(g.shape)} on {g.device}; expected {p.dtype} "
                                 f"{tuple(p.shape)} on cpu")

    def _ensure_state(self, params, gis):
        """PyTorch-layout state for every stepping parameter; returns the freshly created SGD buffers."""
        fresh = set()
        needed = [self._needed(g) for g in self.param_groups]
        for p, gi in zip(params, gis):
            st = self.state[p]
            if self._has_step and "step" not in st:
                st["step"] = torch.tensor(0.0, dtype=torch.float32)
            for name in needed[gi]:
                if st.get(name) is None:
                    st[name] = self._init_state(name, p, self.param_groups[gi])
                    if self._etakit is _optim.SGD:
                        fresh.add(id(p))
        return fresh

    def _build_plan(self, params, gis, fresh):
        plan = _core.Plan(self._etakit._rule, len(params), len(self.param_groups))
        steps = [int(self.state[p]["step"]) if self._has_step else 0 for p in params]
        self._steps = torch.tensor(steps, dtype=torch.float32) if self._has_step else None
        for i, (p, gi) in enumerate(zip(params, gis)):
            st = self.state[p]
            if self._has_step:
                st["step"] = self._steps[i]   # a view: one += advances every parameter's step
            states = []
            for name in self._state_names:
                t = st.get(name) if name else None
                if t is not None:
                    _check_param(t, f"optimizer state {name!r}")
                    if t.dtype != p.dtype or t.shape != p.shape:
                        raise ValueError(f"optimizer state {name!r} is {t.dtype} {tuple(t.shape)}; expected "
                                         f"{p.dtype} {tuple(p.shape)} like its parameter")
                states.append(None if t is None else t.numpy())
            plan.set_tensor(i, p.detach().numpy(), tuple(states), gi, steps[i], id(p) in fresh)
        plan.index_written()
        self._plan = plan
        self._hp_cache = None


def _floats(group):
    """The group with 0-d tensor hyperparameters (PyTorch allows a Tensor lr) as floats."""
    if not any(isinstance(v, torch.Tensor) for v in group.values() if not isinstance(v, list)):
        return group
    out = dict(group)
    for k, v in group.items():
        if isinstance(v, torch.Tensor) and k != "params":
            out[k] = float(v)
        elif k == "betas" and any(isinstance(b, torch.Tensor) for b in v):
            out[k] = tuple(float(b) for b in v)
    return out


def _torch_extras(foreach, fused, capturable, differentiable):
    # accepted for signature compatibility; etakit has one (fused) implementation
    return dict(foreach=foreach, fused=fused, capturable=capturable, differentiable=differentiable)


class SGD(_Optimizer):
    """``torch.optim.SGD`` on etakit's kernels (``momentum_buffer`` state).

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = etakit.torch.SGD([w], lr=0.5, momentum=0.9)
    >>> w.grad = torch.ones(3); opt.step()
    >>> w.detach()
    tensor([0.5000, 0.5000, 0.5000])
    """

    _etakit = _optim.SGD
    _state_names = ("momentum_buffer", None, None)
    _has_step = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False,
                 foreach=None, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize,
                                      **_torch_extras(foreach, fused, False, differentiable)))


class Adam(_Optimizer):
    """``torch.optim.Adam`` on etakit's kernels (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``).

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = etakit.torch.Adam([w], lr=0.1)
    >>> w.grad = torch.tensor([1.0, -1.0]); opt.step()
    >>> w.detach()
    tensor([-0.1000,  0.1000])
    """

    _etakit = _optim.Adam
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        if decoupled_weight_decay:
            self._etakit = _optim.AdamW
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                                      **_torch_extras(foreach, fused, capturable, differentiable)))


class AdamW(Adam):
    """``torch.optim.AdamW`` on etakit's kernels; checkpoints load into and from ``torch.optim.AdamW``.

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = etakit.torch.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = torch.zeros(2); opt.step()
    >>> w.detach()
    tensor([0.9500, 0.9500])
    """

    _etakit = _optim.AdamW

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)


class RMSprop(_Optimizer):
    """``torch.optim.RMSprop`` on etakit's kernels (``step``, ``square_avg``, ``momentum_buffer``, ``grad_avg``).

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = etakit.torch.RMSprop([w], lr=0.01)
    >>> w.grad = torch.ones(2); opt.step()
    >>> w.detach()
    tensor([0.9000, 0.9000])
    """

    _etakit = _optim.RMSprop
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize,
                                      **_torch_extras(foreach, None, capturable, differentiable)))


class Adagrad(_Optimizer):
    """``torch.optim.Adagrad`` on etakit's kernels (``step``, ``sum``).

    Examples
    --------
    >>> import torch, etakit.torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = etakit.torch.Adagrad([w], lr=0.1)
    >>> w.grad = torch.ones(2); opt.step()
    >>> w.detach()
    tensor([0.9000, 0.9000])
    """

    _etakit = _optim.Adagrad
    _state_names = ("sum", None, None)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, **_torch_extras(foreach, fused, False, differentiable)))

    def _init_state(self, name, p, group):
        return torch.full_like(p, float(group["initial_accumulator_value"]), memory_format=torch.preserve_format)
