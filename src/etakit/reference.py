"""Pure-numpy reference implementations of etakit's update rules.

This module is the readable specification of every rule (the semantics of
the reference implementation each optimizer's docstring names), the oracle
the tests compare the C kernels against, and the numpy baseline of the
benchmarks.  Every rule has one function::

    <rule>_step(param, grad, state, *, step, **hyperparameters)

that updates ``param`` and the arrays in the dict ``state`` in place, one
numpy operation at a time, in the same order and precision as the C kernels:
scalars are computed in Python floats (double) once per step and applied in
the arrays' dtype.  ``state`` starts empty; the function creates each buffer
when the options first need it, as the reference implementations do, under
their names.  ``step`` is the 1-based number of this step.  The keyword
arguments are the optimizer's group keys (``lr``, ``betas``, ...).

``step_rule(rule, ...)`` calls the function of a rule by its name.  The
functions do no validation; use the optimizer classes for that.

Examples
--------
>>> import numpy as np
>>> from etakit import reference
>>> p = np.ones(3, dtype=np.float32); g = np.full(3, 0.5, dtype=np.float32)
>>> state = {}
>>> reference.adam_step(p, g, state, step=1, lr=0.1)
>>> p     # one float32 step of lr along -sign(g)
array([0.90000004, 0.90000004, 0.90000004], dtype=float32)
>>> sorted(state)
['exp_avg', 'exp_avg_sq']
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[Any]

__all__ = ["step_rule", "call_reductions", "blocked_lane_sum", "global_grad_norm", "grad_multiplier", "scale_grads",
           "ema_lerp", "sgd_step", "adam_step", "rmsprop_step", "adagrad_step",
           "lion_step", "nadam_step", "radam_step", "adamax_step", "adan_step", "adopt_step", "ademamix_step",
           "lamb_step", "lars_step", "adadelta_step", "asgd_step", "rprop_step", "adafactor_step", "muon_step",
           "zeropower_via_newtonschulz", "group_reductions", "dog_group", "dog_step", "group_step",
           "schedulefree_adamw_step", "schedulefree_sgd_step", "schedulefree_radam_step",
           "schedulefree_adamw_advance", "schedulefree_sgd_advance", "schedulefree_radam_advance",
           "schedulefree_switch", "step_groups", "prodigy_groups", "dadapt_adam_groups", "dadapt_sgd_groups",
           "dadapt_adagrad_groups"]


def step_rule(rule: str, param: _Array, grad: _Array, state: dict[str, Any], *, step: int,
              **hyperparameters: Any) -> Any:
    """One step of the rule called ``rule`` (the C rule name, ``"adam"``).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); st = {}
    >>> step_rule("sgd", p, np.ones(2), st, step=1, lr=0.5)
    >>> p
    array([-0.5, -0.5])
    """
    return globals()[f"{rule}_step"](param, grad, state, step=step, **hyperparameters)


def _zeros(state: dict[str, Any], name: str, like: _Array, fill: float = 0.0) -> _Array:
    if name not in state:
        state[name] = np.full_like(like, fill)
    return state[name]


def _grad(param: _Array, grad: _Array, weight_decay: float, maximize: bool) -> _Array:
    """The gradient after maximize and L2 weight decay (a new array if changed)."""
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        g = g + float(weight_decay) * param
    return g


def sgd_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
    """One SGD step (``torch.optim.SGD``), in place.

    ``momentum_buffer`` is created, as a copy of the gradient, at the first
    step with ``momentum != 0``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([1.0, 2.0]); g = np.array([0.5, -0.5])
    >>> sgd_step(p, g, {}, step=1, lr=0.1)
    >>> p
    array([0.95, 2.05])
    """
    lr, momentum, dampening = float(lr), float(momentum), float(dampening)
    g = _grad(param, grad, weight_decay, maximize)
    if momentum != 0:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = np.array(g, dtype=param.dtype, copy=True)
        else:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += (1.0 - dampening) * g
        buf = state["momentum_buffer"]
        g = g + momentum * buf if nesterov else buf
    param += -lr * g


def adam_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
              betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
              amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
    """One Adam step (``decoupled_weight_decay=True``: AdamW), in place.

    State: ``exp_avg``, ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> adam_step(p, g, {}, step=1, lr=0.01)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, eps = float(lr), float(eps)
    beta1, beta2 = float(betas[0]), float(betas[1])
    weight_decay = float(weight_decay)
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * param
    # exp_avg = exp_avg + (1 - beta1) * (g - exp_avg)   (PyTorch's lerp_)
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    # exp_avg_sq = exp_avg_sq * beta2 + ((1 - beta2) * g) * g
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    v = exp_avg_sq
    if amsgrad:
        vmax = _zeros(state, "max_exp_avg_sq", param)
        np.maximum(vmax, exp_avg_sq, out=vmax)
        v = vmax
    bias_correction1 = 1.0 - beta1 ** int(step)
    bias_correction2 = 1.0 - beta2 ** int(step)
    step_size = lr / bias_correction1
    denom = np.sqrt(v)
    denom /= math.sqrt(bias_correction2)
    denom += eps
    np.multiply(exp_avg, -step_size, out=tmp)
    tmp /= denom
    param += tmp


def rmsprop_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, maximize: bool = False) -> None:
    """One RMSprop step (``torch.optim.RMSprop``), in place.

    State: ``square_avg``; ``momentum_buffer`` when ``momentum > 0``;
    ``grad_avg`` when ``centered``; all start at zero.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -1.0])
    >>> rmsprop_step(p, g, {}, step=1, lr=0.01, alpha=0.0)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, alpha, eps, momentum = float(lr), float(alpha), float(eps), float(momentum)
    g = _grad(param, grad, weight_decay, maximize)
    square_avg = _zeros(state, "square_avg", param)
    square_avg *= alpha
    tmp = np.empty_like(param)
    np.multiply(g, 1.0 - alpha, out=tmp)
    tmp *= g
    square_avg += tmp
    if centered:
        grad_avg = _zeros(state, "grad_avg", param)
        np.subtract(g, grad_avg, out=tmp)
        tmp *= 1.0 - alpha
        grad_avg += tmp
        avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        buf = _zeros(state, "momentum_buffer", param)
        buf *= momentum
        np.divide(g, avg, out=tmp)
        buf += tmp
        param += -lr * buf
    else:
        np.multiply(g, -lr, out=tmp)
        tmp /= avg
        param += tmp


def adagrad_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False) -> None:
    """One Adagrad step (``torch.optim.Adagrad``), in place.

    State: ``sum``, starting at ``initial_accumulator_value``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([2.0, -2.0])
    >>> adagrad_step(p, g, {}, step=1, lr=0.1)
    >>> np.round(p, 6)
    array([-0.1,  0.1])
    """
    lr, lr_decay, eps = float(lr), float(lr_decay), float(eps)
    g = _grad(param, grad, weight_decay, maximize)
    state_sum = _zeros(state, "sum", param, float(initial_accumulator_value))
    clr = lr / (1.0 + (int(step) - 1) * lr_decay)
    tmp = np.empty_like(param)
    np.multiply(g, g, out=tmp)
    state_sum += tmp
    std = np.sqrt(state_sum)
    std += eps
    np.multiply(g, -clr, out=tmp)
    tmp /= std
    param += tmp


def lion_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-4,
              betas: tuple[float, ...] = (0.9, 0.99), weight_decay: float = 0.0, weight_decouple: bool = True,
              fixed_decay: bool = False, maximize: bool = False) -> None:
    """One Lion step (``pytorch_optimizer.Lion``), in place.

    State: ``exp_avg``.  ``sign`` is numpy's (0 for a zero interpolation).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(3); g = np.array([1.0, -1.0, 0.0])
    >>> lion_step(p, g, {}, step=1, lr=0.1)
    >>> p
    array([-0.1,  0.1,  0. ])
    """
    lr, weight_decay = float(lr), float(weight_decay)
    beta1, beta2 = float(betas[0]), float(betas[1])
    exp_avg = _zeros(state, "exp_avg", param)
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        if weight_decouple:
            param *= 1.0 - weight_decay * (1.0 if fixed_decay else lr)
        else:
            g = g + weight_decay * param
    update = np.empty_like(param)
    np.subtract(g, exp_avg, out=update)
    update *= 1.0 - beta1
    update += exp_avg
    np.sign(update, out=update)
    d = np.empty_like(param)
    np.subtract(g, exp_avg, out=d)
    d *= 1.0 - beta2
    exp_avg += d
    update *= -lr
    param += update


def adadelta_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1.0, rho: float = 0.9,
                  eps: float = 1e-6, weight_decay: float = 0.0, maximize: bool = False) -> None:
    """One Adadelta step (``torch.optim.Adadelta``), in place.

    State: ``square_avg`` and ``acc_delta``, both starting at zero.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([0.3, -0.3])
    >>> adadelta_step(p, g, {}, step=1, rho=0.0, eps=0.16)   # delta = 0.4 / sqrt(0.09 + 0.16) * g
    >>> np.round(p, 6)
    array([-0.24,  0.24])
    """
    lr, rho, eps = float(lr), float(rho), float(eps)
    g = _grad(param, grad, weight_decay, maximize)
    square_avg, acc_delta = _zeros(state, "square_avg", param), _zeros(state, "acc_delta", param)
    tmp = np.empty_like(param)
    # square_avg = square_avg * rho + ((1 - rho) * g) * g
    square_avg *= rho
    np.multiply(g, 1.0 - rho, out=tmp)
    tmp *= g
    square_avg += tmp
    # delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * g
    # acc_delta = acc_delta * rho + ((1 - rho) * delta) * delta
    acc_delta *= rho
    np.multiply(delta, 1.0 - rho, out=tmp)
    tmp *= delta
    acc_delta += tmp
    param += delta * -lr


def _scalar(state: dict[str, Any], name: str, value: float) -> _Array:
    """A per-tensor scalar state entry: a float64 0-d array, created at ``value``."""
    if name not in state:
        state[name] = np.array(float(value), dtype=np.float64)
    return state[name]


def asgd_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-2, lambd: float = 1e-4,
              alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0, maximize: bool = False) -> None:
    """One ASGD step (``torch.optim.ASGD``), in place.

    State: ``ax`` (starts at zero), and the float64 scalars ``eta`` (starts
    at ``lr``) and ``mu`` (starts at 1); the step uses their current values,
    then sets those of the next step.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.ones(2); st = {}
    >>> asgd_step(p, np.array([1.0, -1.0]), st, step=1, lr=0.5, lambd=0.0)
    >>> p, st["ax"]
    (array([0.5, 1.5]), array([0.5, 1.5]))
    """
    lr, lambd, alpha, t0 = float(lr), float(lambd), float(alpha), float(t0)
    eta, mu = _scalar(state, "eta", lr), _scalar(state, "mu", 1.0)
    ax = _zeros(state, "ax", param)
    g = _grad(param, grad, weight_decay, maximize)
    e, m = float(eta), float(mu)
    param *= 1.0 - lambd * e
    param += g * -e
    if m != 1.0:
        ax += (param - ax) * m
    else:
        ax[...] = param
    t = float(int(step))
    eta[...] = lr / (1.0 + lambd * lr * t) ** alpha
    mu[...] = 1.0 / max(1.0, t - t0)


def _torch_sign(x: _Array) -> _Array:
    """PyTorch's sign: 1, -1, or 0 (for +-0 and for NaN), in x's dtype."""
    return np.where(x > 0, 1, np.where(x < 0, -1, 0)).astype(x.dtype)


def rprop_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-2,
               etas: tuple[float, ...] = (0.5, 1.2), step_sizes: tuple[float, ...] = (1e-6, 50),
               maximize: bool = False) -> None:
    """One Rprop step (``torch.optim.Rprop``), in place.

    State: ``prev`` (starts at zero) and ``step_size`` (starts at ``lr``).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(3); st = {}
    >>> rprop_step(p, np.array([1.0, -1.0, 0.0]), st, step=1, lr=0.1)
    >>> p
    array([-0.1,  0.1,  0. ])
    """
    dt = param.dtype.type
    etaminus, etaplus = dt(etas[0]), dt(etas[1])
    lo, hi = dt(step_sizes[0]), dt(step_sizes[1])
    prev = _zeros(state, "prev", param)
    step_size = _zeros(state, "step_size", param, float(lr))
    g = np.negative(grad) if maximize else grad
    prod = g * prev
    factor = np.where(prod > 0, etaplus, np.where(prod < 0, etaminus, dt(1)))
    step_size *= factor
    # clamp as min(max(x, lo), hi), NaN passing through
    step_size[...] = np.where(step_size < lo, lo, step_size)
    step_size[...] = np.where(step_size > hi, hi, step_size)
    g = np.where(factor == etaminus, dt(0), g)
    update = _torch_sign(g)
    update *= dt(-1)
    update *= step_size
    param += update
    prev[...] = g


def _lane_sums(x: _Array) -> _Array:
    """Sums of the last axis of float64 ``x`` in LANES lanes, as a kernel's block loop:
    lane j adds x[..., j], x[..., j + LANES], ... in order; the lanes are then added in order."""
    m = x.shape[-1]
    chunks = -(-m // LANES)
    padded = np.zeros(x.shape[:-1] + (chunks * LANES,))
    padded[..., :m] = x             # + 0.0 changes no lane sum (a -0.0 lane adds as +0.0 below anyway)
    lanes = np.cumsum(padded.reshape(x.shape[:-1] + (chunks, LANES)), axis=-2)[..., -1, :]   # sequential
    out = np.zeros(x.shape[:-1])
    for j in range(LANES):
        out = out + lanes[..., j]
    return out


# Adafactor's tiles (csrc/rules/adafactor.h): at most AF_WIDTH columns by as
# many rows as make AF_TILE elements.  Row sums are formed per tile stripe of
# columns (in LANES lanes), column sums per tile group of rows (row after
# row); the partial sums are then added stripe after stripe, group after group.
AF_TILE = 65536


AF_WIDTH = 256


def _adafactor_sums(sq: _Array) -> tuple[_Array, _Array]:
    """Row and column sums of ``sq`` (float64, shape (batch, R, C)) in the kernel's order."""
    nb, R, C = sq.shape
    w = min(C, AF_WIDTH)
    h = min(R, AF_TILE // w)
    rows = np.zeros((nb, R))
    for c0 in range(0, C, w):
        rows = rows + _lane_sums(sq[:, :, c0:c0 + w])
    cols = np.zeros((nb, C))
    for r0 in range(0, R, h):
        part = np.zeros((nb, C))
        for r in range(r0, min(R, r0 + h)):
            part = part + sq[:, r, :]
        cols = cols + part
    return rows, cols


def adafactor_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-2,
                   beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                   weight_decay: float = 0.0, maximize: bool = False) -> None:
    """One Adafactor step (``torch.optim.Adafactor``), in place.

    State: ``row_var`` (shape (..., R, 1)) and ``col_var`` (shape (..., 1, C))
    for a parameter of two or more dimensions, ``variance`` (its shape) for
    the others; all start at zero.  Row and column statistics are computed in
    double from the kernel's sums and stored in the parameter's dtype; the
    element-wise work is in the parameter's dtype; sums of squares follow
    :func:`blocked_lane_sum`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.ones((2, 2)); g = np.array([[1.0, -1.0], [2.0, 0.0]])
    >>> st = {}
    >>> adafactor_step(p, g, st, step=1, lr=0.1)
    >>> np.round(p, 4)
    array([[0.9293, 1.1581],
           [0.9   , 1.    ]])
    >>> st["row_var"].ravel(), st["col_var"].ravel()
    (array([1., 2.]), array([2.5, 0.5]))
    """
    dt = param.dtype
    T = dt.type
    lr, beta2_decay, d, weight_decay = float(lr), float(beta2_decay), float(d), float(weight_decay)
    eps1 = float(np.finfo(dt).eps) if eps[0] is None else float(eps[0])
    eps2 = float(eps[1])
    factored = param.ndim >= 2
    if factored:
        row_var = _zeros(state, "row_var", np.empty(param.shape[:-1] + (1,), dtype=dt))
        col_var = _zeros(state, "col_var", np.empty(param.shape[:-2] + (1, param.shape[-1]), dtype=dt))
    else:
        variance = _zeros(state, "variance", param)
    n = param.size
    if n == 0:
        return
    t = float(int(step))
    w = t ** beta2_decay                     # 1 - beta2_t
    omw = 1.0 - w
    high = not abs(w) < 0.5                  # PyTorch's lerp: b - (b - a)(1 - w) for w >= 0.5
    e2 = T(eps1 * eps1)
    g = np.negative(grad) if maximize else grad
    if factored:
        R, C = param.shape[-2:]
        nb = n // (R * C)
        g64 = grad.astype(np.float64).reshape(nb, R, C)
        rows, cols = _adafactor_sums(g64 * g64)

        def lerp(a: _Array, b: _Array) -> _Array:
            return b - (b - a) * omw if high else a + w * (b - a)

        rv = lerp(row_var.reshape(nb, R).astype(np.float64), rows / float(C)).astype(dt)
        cv = lerp(col_var.reshape(nb, C).astype(np.float64), cols / float(R)).astype(dt)
        row_var[...] = rv.reshape(row_var.shape)
        col_var[...] = cv.reshape(col_var.shape)
        total = np.zeros(nb)
        for r in range(R):
            total = total + rv[:, r].astype(np.float64)
        mean = total / float(R)
        mean = np.where(mean < eps1, eps1, mean)          # clamp(min=eps1); NaN stays
        scaled = (rv.astype(np.float64) / mean[:, None]).astype(dt)
        v = scaled[:, :, None] * cv[:, None, :]            # (row_var / max(mean, eps1)) * col_var
        v = v.reshape(param.shape)
    else:
        g2 = g * g
        tmp = g2 - variance
        if high:
            tmp *= T(omw)
            variance[...] = g2 - tmp
        else:
            tmp *= T(w)
            variance += tmp
        v = variance
    v = np.where(v < e2, e2, v)
    u = g / np.sqrt(v)
    p64, u64 = param.astype(np.float64), u.astype(np.float64)
    pp, uu = blocked_lane_sum(p64 * p64), blocked_lane_sum(u64 * u64)
    rho = min(lr, 1.0 / math.sqrt(t))
    alpha = max(eps2, math.sqrt(pp) / math.sqrt(n)) * rho
    denom = max(1.0, math.sqrt(uu) / (math.sqrt(n) * d))
    if weight_decay != 0:
        param *= T(1.0 - lr * weight_decay)
    param += T(-alpha / denom) * u


def _lerp(a: _Array, b: _Array, w: float) -> _Array:
    """``torch.lerp(a, b, w)`` as a new array: a + w (b - a) when |w| < 0.5, else b - (b - a)(1 - w)."""
    w = float(w)
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1.0 - w)


def zeropower_via_newtonschulz(G: _Array, ns_coefficients: tuple[float, ...] = (3.4445, -4.7750, 2.0315),
                               ns_steps: int = 5, eps: float = 1e-7, out: _Array | None = None) -> _Array:
    """Muon's orthogonalisation of a matrix by quintic Newton-Schulz iterations, in G's dtype.

    ``torch.optim.Muon``'s ``_zeropower_via_newtonschulz`` without its
    bfloat16 cast: ``X = G / max(|G|_F, eps)``, then ``ns_steps`` times
    ``A = X X^T;  X = a X + (b A + c A A) X`` on the wide orientation of G
    (torch transposes a tall G; here a tall G keeps its layout and the
    products are transposed instead: ``A = X^T X;  X = a X + X (b A + c A A)``).
    ``X @ X.T`` and ``A @ A.T`` (which is ``A @ A``: A is exactly symmetric)
    are products of a matrix with its own transpose, for which numpy calls
    BLAS's symmetric rank-k update.  etakit.Muon calls this function, so the
    optimizer and this reference agree bit for bit.  The result is written
    into ``out`` (which may be G) when given, else returned as a new array.

    Examples
    --------
    >>> import numpy as np
    >>> O = zeropower_via_newtonschulz(np.array([[3.0, 0.0], [0.0, 1.0]]))
    >>> np.round(np.diag(O), 2)      # singular values pushed towards 1 (roughly: into [0.7, 1.2])
    array([0.75, 1.13])
    """
    a, b, c = (float(x) for x in ns_coefficients)
    tall = G.shape[0] > G.shape[1]
    X = G / max(np.linalg.norm(G), float(eps))
    for _ in range(int(ns_steps)):
        A = X.T @ X if tall else X @ X.T
        B = A @ A.T
        B *= c
        A *= b
        B += A                                # b A + c A A
        Y = X @ B if tall else B @ X
        X *= a
        Y += X                                # a X + B X
        X = Y
    if out is None:
        return X
    out[...] = X
    return out


def muon_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
              weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
              ns_coefficients: tuple[float, ...] = (3.4445, -4.7750, 2.0315), eps: float = 1e-7, ns_steps: int = 5,
              adjust_lr_fn: str | None = None) -> None:
    """One Muon step (``torch.optim.Muon``) of a 2-D ``param``, in place.

    State: ``momentum_buffer``.  The orthogonalisation runs in the
    parameter's dtype (torch's in bfloat16): :func:`zeropower_via_newtonschulz`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((1, 2)); g = np.array([[3.0, -4.0]])
    >>> muon_step(p, g, {}, step=1, lr=0.1)
    >>> np.round(p, 3)           # lr times g / |g| (a 1 x n matrix), times 0.7: NS maps a singular value 1 to 0.7
    array([[-0.042,  0.056]])
    """
    lr, weight_decay, momentum = float(lr), float(weight_decay), float(momentum)
    m = _zeros(state, "momentum_buffer", param)
    if param.size == 0:
        return
    m[...] = _lerp(m, grad, 1.0 - momentum)
    update = _lerp(grad, m, momentum) if nesterov else m
    o = zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)
    rows, cols = param.shape
    if adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = math.sqrt(max(1.0, rows / cols))
    if weight_decay != 0:
        param *= 1.0 - lr * weight_decay
    param += -(lr * ratio) * o


def group_step(rule: str, group_state: dict[str, Any], hyperparameters: dict[str, Any]) -> None:
    """Advance a group's per-group scalars past one step, in place, once every tensor of it has stepped.

    For a rule whose groups keep scalars that a step updates (the keys of
    ``etakit._core.rule_info(rule)["group_state"]``: the schedule-free
    rules' ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``), its
    ``<rule>_advance(group_state, **hyperparameters)`` does it; a no-op for the
    others.  Each tensor's ``<rule>_step`` takes the values from before the
    step as keyword arguments.

    Examples
    --------
    >>> gs = dict(k=0, lr_max=-1.0, weight_sum=0.0, scheduled_lr=0.0, train_mode=True)
    >>> group_step("schedulefree_sgd", gs, dict(lr=0.5, warmup_steps=2))
    >>> gs["k"], gs["lr_max"], gs["weight_sum"], gs["scheduled_lr"]
    (1, 0.25, 0.0625, 0.25)
    >>> group_step("adam", {}, {})
    """
    fn = globals().get(f"{rule}_advance")
    if fn is not None:
        fn(group_state, **hyperparameters)


def _sf_average(k: int, lr: float, lr_max: float, weight_sum: float, r: float,
                weight_lr_power: float) -> tuple[float, float, float]:
    """(lr_max, weight_sum, ckp1) of a group's step at rate ``lr``, from its scalars before it."""
    lr_max = max(lr, lr_max)
    weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
    weight_sum = weight_sum + weight
    ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
    return lr_max, weight_sum, ckp1


def _sf_warmup_lr(k: int, lr: float, warmup_steps: int) -> float:
    return float(lr) * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)


def _sf_radam_lr(k: int, lr: float, beta2: float, silent_sgd_phase: bool) -> tuple[float, float, bool]:
    """(lr_t, 1 - beta2^t, whether the gradient is normalised) of RAdamScheduleFree's step t = k + 1."""
    step = k + 1
    beta2_t = beta2 ** step
    bias_correction2 = 1 - beta2_t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2_t / bias_correction2
    if rho_t > 4.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    else:
        rect = float(not silent_sgd_phase)
    return float(lr) * rect, bias_correction2, rho_t > 4.0


def _sf_commit(group_state: dict[str, Any], lr_t: float, lr_max: float, weight_sum: float) -> None:
    group_state["k"] = group_state["k"] + 1
    group_state["lr_max"] = lr_max
    group_state["weight_sum"] = weight_sum
    group_state["scheduled_lr"] = lr_t


def _sf_update(param: _Array, grad: _Array, state: dict[str, Any], lr_t: float, ckp1: float, beta1: float,
               weight_decay: float, second: str | None = None, beta2: float = 0.0, eps: float = 0.0,
               bias_correction2: float = 1.0) -> None:
    """The element-wise step; ``second``: None (SGD), "adam" (normalise g) or "raw" (update v only)."""
    z = state.get("z")
    if z is None:
        z = state["z"] = param.copy()
    g = grad
    if second is not None:
        v = _zeros(state, "exp_avg_sq", param)
        v *= beta2
        tmp = np.multiply(grad, 1.0 - beta2)
        tmp *= grad
        v += tmp
        if second == "adam":
            den = np.sqrt(v / bias_correction2) + eps
            g = grad / den
    if weight_decay != 0:
        g = g + weight_decay * param
    y = _lerp(param, z, ckp1)
    y += (lr_t * (beta1 * (1 - ckp1) - 1)) * g
    z += (-lr_t) * g
    param[...] = y


def schedulefree_adamw_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 0.0025,
                            betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                            warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, k: int = 0,
                            lr_max: float = -1.0, weight_sum: float = 0.0, scheduled_lr: float | None = None,
                            train_mode: float | None = None) -> None:
    """One Schedule-Free AdamW step (``schedulefree.AdamWScheduleFree``) of ``param`` (y), in place.

    State: ``z`` (a copy of the parameter at first) and ``exp_avg_sq``.
    ``k``, ``lr_max`` and ``weight_sum`` are the group's scalars before the
    step (:func:`group_step` advances them); ``step``, ``scheduled_lr`` and
    ``train_mode`` are not read.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); st = {}
    >>> schedulefree_adamw_step(p, np.array([1.0, -2.0]), st, step=1, lr=0.1)
    >>> np.round(p, 6)          # the first step: y = z = -lr * sign(g)
    array([-0.1,  0.1])
    """
    beta1, beta2 = float(betas[0]), float(betas[1])
    lr_t = _sf_warmup_lr(k, lr, warmup_steps)
    _, _, ckp1 = _sf_average(k, lr_t, lr_max, weight_sum, r, weight_lr_power)
    _sf_update(param, grad, state, lr_t, ckp1, beta1, float(weight_decay), "adam", beta2, float(eps),
               1 - beta2 ** (k + 1))


def schedulefree_adamw_advance(group_state: dict[str, Any], *, lr: float = 0.0025, warmup_steps: int = 0,
                               r: float = 0.0, weight_lr_power: float = 2.0, **_: Any) -> None:
    """Advance the group's ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr`` past one AdamWScheduleFree step.

    Examples
    --------
    >>> gs = dict(k=0, lr_max=-1.0, weight_sum=0.0, scheduled_lr=0.0, train_mode=True)
    >>> schedulefree_adamw_advance(gs, lr=0.01, warmup_steps=2)
    >>> gs["k"], gs["scheduled_lr"]          # half way through the warmup
    (1, 0.005)
    """
    k = group_state["k"]
    lr_t = _sf_warmup_lr(k, lr, warmup_steps)
    lr_max, weight_sum, _ckp1 = _sf_average(k, lr_t, group_state["lr_max"], group_state["weight_sum"], r,
                                            weight_lr_power)
    _sf_commit(group_state, lr_t, lr_max, weight_sum)


def schedulefree_sgd_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1.0,
                          momentum: float = 0.9, weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                          weight_lr_power: float = 2.0, k: int = 0, lr_max: float = -1.0, weight_sum: float = 0.0,
                          scheduled_lr: float | None = None, train_mode: float | None = None) -> None:
    """One Schedule-Free SGD step (``schedulefree.SGDScheduleFree``) of ``param`` (y), in place.

    State: ``z``.  Group scalars as for :func:`schedulefree_adamw_step`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); st = {}
    >>> schedulefree_sgd_step(p, np.array([1.0, -2.0]), st, step=1, lr=0.1)
    >>> p, st["z"]
    (array([-0.1,  0.2]), array([-0.1,  0.2]))
    """
    lr_t = _sf_warmup_lr(k, lr, warmup_steps)
    _, _, ckp1 = _sf_average(k, lr_t, lr_max, weight_sum, r, weight_lr_power)
    _sf_update(param, grad, state, lr_t, ckp1, float(momentum), float(weight_decay))


def schedulefree_sgd_advance(group_state: dict[str, Any], *, lr: float = 1.0, warmup_steps: int = 0, r: float = 0.0,
                             weight_lr_power: float = 2.0, **_: Any) -> None:
    """Advance the group's ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr`` past one SGDScheduleFree step.

    Examples
    --------
    >>> gs = dict(k=0, lr_max=-1.0, weight_sum=0.0, scheduled_lr=0.0, train_mode=True)
    >>> schedulefree_sgd_advance(gs, lr=0.5)
    >>> gs["k"], gs["lr_max"], gs["weight_sum"]        # weights lr_max ** 2
    (1, 0.5, 0.25)
    """
    schedulefree_adamw_advance(group_state, lr=lr, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


def schedulefree_radam_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 0.0025,
                            betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                            r: float = 0.0, weight_lr_power: float = 2.0, silent_sgd_phase: bool = True, k: int = 0,
                            lr_max: float = -1.0, weight_sum: float = 0.0, scheduled_lr: float | None = None,
                            train_mode: float | None = None) -> None:
    """One Schedule-Free RAdam step (``schedulefree.RAdamScheduleFree``) of ``param`` (y), in place.

    State: ``z`` and ``exp_avg_sq``.  Group scalars as for :func:`schedulefree_adamw_step`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); st = {}
    >>> schedulefree_radam_step(p, np.array([1.0, -2.0]), st, step=1, lr=0.1)
    >>> p, st["exp_avg_sq"]     # silent SGD phase: only the second moment moves
    (array([0., 0.]), array([0.001, 0.004]))
    """
    beta1, beta2 = float(betas[0]), float(betas[1])
    lr_t, bias_correction2, adam = _sf_radam_lr(k, lr, beta2, silent_sgd_phase)
    _, _, ckp1 = _sf_average(k, lr_t, lr_max, weight_sum, r, weight_lr_power)
    _sf_update(param, grad, state, lr_t, ckp1, beta1, float(weight_decay), "adam" if adam else "raw", beta2,
               float(eps), bias_correction2)


def schedulefree_radam_advance(group_state: dict[str, Any], *, lr: float = 0.0025,
                               betas: tuple[float, ...] = (0.9, 0.999), r: float = 0.0, weight_lr_power: float = 2.0,
                               silent_sgd_phase: bool = True, **_: Any) -> None:
    """Advance the group's ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr`` past one RAdamScheduleFree step.

    Examples
    --------
    >>> gs = dict(k=0, lr_max=-1.0, weight_sum=0.0, scheduled_lr=0.0, train_mode=True)
    >>> schedulefree_radam_advance(gs, lr=0.01)
    >>> gs["k"], gs["scheduled_lr"]          # no step while the rectification is undefined
    (1, 0.0)
    """
    k = group_state["k"]
    lr_t, _bc2, _defined = _sf_radam_lr(k, lr, float(betas[1]), silent_sgd_phase)
    lr_max, weight_sum, _ckp1 = _sf_average(k, lr_t, group_state["lr_max"], group_state["weight_sum"], r,
                                            weight_lr_power)
    _sf_commit(group_state, lr_t, lr_max, weight_sum)


def schedulefree_switch(param: _Array, state: dict[str, Any], *, train: bool, beta1: float) -> None:
    """The schedule-free optimizers' ``train()`` (``train=True``: x -> y) or ``eval()`` (y -> x) for one
    parameter, in place: ``p = lerp(p, z, 1 - beta1)`` or ``lerp(p, z, 1 - 1/beta1)``; nothing without ``z``
    (a parameter not stepped yet).  ``beta1`` is SGD's ``momentum``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([1.0]); st = {"z": np.array([3.0])}
    >>> schedulefree_switch(p, st, train=False, beta1=0.5); p     # x = (y - (1 - beta1) z) / beta1
    array([-1.])
    >>> schedulefree_switch(p, st, train=True, beta1=0.5); p
    array([1.])
    """
    z = state.get("z")
    if z is not None:
        beta1 = float(beta1)
        param[...] = _lerp(param, z, 1.0 - beta1 if train else 1.0 - 1.0 / beta1)


# ---- reductions -----------------------------------------------------------
# The engine sums a reduction over blocks of BLOCK elements of each tensor,
# each block over LANES lanes (element i of the block in lane i % LANES),
# lanes in order, then blocks in order, then tensors in order (csrc/engine.c,
# etk_internal.h); these helpers form the same sums in the same order.
BLOCK = 4096
LANES = 16


def blocked_lane_sum(x: _Array) -> float:
    """The sum of ``x`` (converted to float64) formed exactly as the C engine forms a reduction.

    The flattened array is cut into blocks of ``BLOCK`` elements; in each
    block, element ``i`` is added to lane ``i % LANES`` (lanes start at 0 and
    are summed in element order), the lanes are summed in lane order, and the
    blocks in block order.  The result does not depend on threads or vector
    width, and a kernel's reducing phase reproduces it bit for bit when it
    adds the same float64 values.

    Examples
    --------
    >>> import numpy as np
    >>> blocked_lane_sum(np.arange(5.0))
    10.0
    >>> blocked_lane_sum(np.zeros(0))
    0.0
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    nb = -(-x.size // BLOCK)
    buf = np.zeros(nb * BLOCK)
    buf[:x.size] = x
    # lanes: sequential sums over the rows of each block (accumulate is strictly in order);
    # + 0.0 as the C accumulators start at +0.0
    lanes = np.add.accumulate(buf.reshape(nb, BLOCK // LANES, LANES), axis=1)[:, -1, :] + 0.0
    blocks = np.add.accumulate(lanes, axis=1)[:, -1]
    return float(np.add.accumulate(blocks)[-1])


def global_grad_norm(grads: Sequence[_Array], norm_inf: bool = False,
                     grad_scale: float | None = None) -> tuple[float, int | None]:
    """The global norm of ``grads`` as a step with clipping forms it (``etk_step_opts``).

    Returns ``(norm, bad)``: the 2-norm (``sqrt`` of the blocked float64 sums of
    squares, :func:`blocked_lane_sum`, tensor by tensor in order) or, with
    ``norm_inf``, the largest magnitude (NaN if an element is NaN, as torch's),
    divided by ``grad_scale``; ``bad`` is the index of the first gradient
    holding inf or NaN, else None.

    Examples
    --------
    >>> import numpy as np
    >>> global_grad_norm([np.array([3.0]), np.array([4.0])])
    (5.0, None)
    >>> global_grad_norm([np.array([1.0]), np.array([np.inf])], norm_inf=True)
    (inf, 1)
    """
    total, nan = 0.0, False
    bad: int | None = None
    for i, g in enumerate(grads):
        x = np.asarray(g).astype(np.float64).ravel()
        if norm_inf:
            a = np.abs(x)
            s = float(np.max(a[~np.isnan(a)], initial=0.0))
            total = s if s > total else total
            nan = nan or bool(np.isnan(x).any())
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                total += blocked_lane_sum(x * x)
        if bad is None and not np.isfinite(x).all():
            bad = i
    scale = grad_scale or 1.0
    norm = math.nan if nan else (total if norm_inf else math.sqrt(total)) / scale
    return norm, bad


def grad_multiplier(norm: float, max_grad_norm: float | None = None, grad_scale: float | None = None) -> float:
    """The factor a step reads the gradients with: ``(1 / grad_scale) * min(1, max_grad_norm / (norm + 1e-6))``
    (``torch.nn.utils.clip_grad_norm_``'s clipping factor; NaN stays NaN), in float64.

    Examples
    --------
    >>> grad_multiplier(10.0, 1.0) == 1.0 / (10.0 + 1e-6)
    True
    >>> grad_multiplier(0.5, 1.0, grad_scale=4.0)
    0.25
    """
    coef = 1.0
    if max_grad_norm:
        coef = max_grad_norm / (norm + 1e-6)
        if coef > 1.0:
            coef = 1.0
    return coef / (grad_scale or 1.0)


def scale_grads(grads: Sequence[_Array], mul: float) -> list[_Array]:
    """The gradients as the step reads them: ``g * mul``, ``mul`` rounded to each gradient's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> scale_grads([np.array([2.0, 4.0], dtype=np.float32)], 0.5)
    [array([1., 2.], dtype=float32)]
    """
    with np.errstate(all="ignore"):
        return [np.asarray(g) * np.asarray(mul, dtype=np.asarray(g).dtype) for g in grads]


def ema_lerp(ema: _Array, p: _Array, w: float) -> _Array:
    """``torch.lerp(ema, p, w)`` in the arrays' dtype, as the step moves an EMA: ``ema + w (p - ema)``
    for ``w < 0.5``, else ``p - (p - ema) (1 - w)``.

    Examples
    --------
    >>> import numpy as np
    >>> ema_lerp(np.array([0.0]), np.array([4.0]), 0.25)
    array([1.])
    """
    e = np.asarray(ema)
    p = np.asarray(p)
    t = e.dtype.type
    if w < 0.5:
        return e + t(w) * (p - e)
    return p - (p - e) * t(1.0 - w)


def _sum_sq(x: _Array) -> float:
    """sum(x^2) as a reducing phase forms it: each square in float64 (exact for float32)."""
    x = np.asarray(x, dtype=np.float64)
    return blocked_lane_sum(x * x)


def nadam_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 2e-3,
               betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
               momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """One NAdam step (``torch.optim.NAdam``; ``decoupled_weight_decay=True``: NAdamW), in place.

    State: ``exp_avg``, ``exp_avg_sq`` and ``mu_product``, the product of
    the momentum coefficients so far (a float64 0-d array, starting at 1).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0]); st = {}
    >>> nadam_step(p, g, st, step=1, lr=0.01)
    >>> np.round(p, 6)
    array([-0.010565,  0.010565])
    >>> float(st["mu_product"])     # 0.9 * (1 - 0.96**0.004 / 2)
    0.45007347359129607
    """
    lr, eps, weight_decay, momentum_decay = float(lr), float(eps), float(weight_decay), float(momentum_decay)
    beta1, beta2 = float(betas[0]), float(betas[1])
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    if "mu_product" not in state:
        state["mu_product"] = np.array(1.0, dtype=np.float64)
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * param
    t = float(int(step))
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * momentum_decay))
    mu_product = float(state["mu_product"]) * mu
    mu_product_next = mu_product * mu_next
    bias_correction2 = 1.0 - beta2 ** t
    # the moments as Adam's
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    denom = np.divide(exp_avg_sq, bias_correction2, out=np.empty_like(param))
    np.sqrt(denom, out=denom)
    denom += eps
    # two additions into param, each rounded, in torch's order
    np.multiply(g, -lr * (1.0 - mu) / (1.0 - mu_product), out=tmp)
    tmp /= denom
    param += tmp
    np.multiply(exp_avg, -lr * mu_next / (1.0 - mu_product_next), out=tmp)
    tmp /= denom
    param += tmp
    state["mu_product"][...] = mu_product

def radam_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
               betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """One RAdam step (``torch.optim.RAdam``), in place.

    State: ``exp_avg`` and ``exp_avg_sq``.  While ``rho_t <= 5`` (the first
    steps; always when ``beta2`` is small) the step is ``lr`` times the
    bias-corrected momentum, without the adaptive denominator.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> radam_step(p, g, {}, step=1, lr=0.01)    # not rectified yet: p -= lr * g
    >>> p
    array([-0.01,  0.02])
    """
    lr, eps, weight_decay = float(lr), float(eps), float(weight_decay)
    beta1, beta2 = float(betas[0]), float(betas[1])
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * param
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    t = float(int(step))
    bias_correction1 = 1.0 - beta1 ** t
    bias_correction2 = 1.0 - beta2 ** t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2 ** t / bias_correction2
    update = np.divide(exp_avg, bias_correction1, out=np.empty_like(param))
    update *= lr
    if rho_t > 5.0:
        rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
        np.sqrt(exp_avg_sq, out=tmp)
        tmp += eps
        np.divide(bias_correction2 ** 0.5, tmp, out=tmp)
        update *= tmp
        update *= rect
    param -= update

def adamax_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 2e-3,
                betas: tuple[float, ...] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                maximize: bool = False) -> None:
    """One Adamax step (``torch.optim.Adamax``), in place.

    State: ``exp_avg`` and ``exp_inf``, the exponentially weighted infinity
    norm ``max(beta2 * exp_inf, |g| + eps)``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> adamax_step(p, g, {}, step=1, lr=0.01)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, eps = float(lr), float(eps)
    beta1, beta2 = float(betas[0]), float(betas[1])
    g = _grad(param, grad, weight_decay, maximize)
    exp_avg, exp_inf = _zeros(state, "exp_avg", param), _zeros(state, "exp_inf", param)
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    exp_inf *= beta2
    np.abs(g, out=tmp)
    tmp += eps
    np.maximum(exp_inf, tmp, out=exp_inf)
    clr = lr / (1.0 - beta1 ** float(int(step)))
    np.multiply(exp_avg, -clr, out=tmp)
    tmp /= exp_inf
    param += tmp


def call_reductions(rule: str, grads: list[_Array], hyperparameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The keyword arguments each tensor's ``<rule>_step`` takes from sums over the whole step.

    Most rules update each tensor on its own and need none (a list of empty
    dicts).  A rule that reduces over every tensor of the step (Adan's
    ``max_grad_norm``, LAMB's ``pre_norm``: the joint norm of the gradients)
    has a ``<rule>_call(grads, hyperparameters)`` that forms those sums in the
    engine's order.  ``grads`` and ``hyperparameters`` are per tensor, in the
    order of the step (groups in order, then parameters in their group).

    Examples
    --------
    >>> import numpy as np
    >>> hp = dict(max_grad_norm=1.0)
    >>> call_reductions("adan", [np.ones(3), np.full(2, 2.0)], [hp, hp])
    [{'grad_sq_sum': 11.0}, {'grad_sq_sum': 11.0}]
    >>> call_reductions("adam", [np.ones(3)], [{}])
    [{}]
    """
    fn = globals().get(f"{rule}_call")
    return fn(grads, hyperparameters) if fn is not None else [{} for _ in grads]


def adan_call(grads: list[_Array], hyperparameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adan's clip: the tensors whose group has ``max_grad_norm > 0`` get ``grad_sq_sum``,
    their squared gradients summed in tensor order as the engine does."""
    clipped = [float(hp.get("max_grad_norm", 0.0)) > 0 for hp in hyperparameters]
    total = 0.0
    for g, c in zip(grads, clipped):
        if c:
            total += _sum_sq(g)
    return [{"grad_sq_sum": total} if c else {} for c in clipped]


def lamb_call(grads: list[_Array], hyperparameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LAMB's ``pre_norm`` input (see :func:`call_reductions`): ``global_grad_sq``, the
    squared gradients of every tensor whose group has ``pre_norm``, each
    tensor's sum formed by :func:`blocked_lane_sum`, the tensors added in order.

    Examples
    --------
    >>> import numpy as np
    >>> lamb_call([np.ones(3), np.ones(2)], [dict(pre_norm=True), dict(pre_norm=False)])
    [{'global_grad_sq': 3.0}, {'global_grad_sq': 3.0}]
    """
    total = 0.0
    for g, hp in zip(grads, hyperparameters):
        if hp.get("pre_norm", False):
            total += _sum_sq(g)
    return [{"global_grad_sq": total} for _ in grads]


def _lamb_step_size(step: int, lr: float, beta1: float, beta2: float, rectify: bool, degenerated_to_sgd: bool,
                    n_sma_threshold: int, adam_debias: bool) -> tuple[float, str]:
    """(step size, update form) of LAMB at ``step``: pytorch_optimizer's get_rectify_step_size and
    apply_adam_debias; the form is "adam", "rect", "sgd" or "skip" (rectify with a step size <= 0)."""
    step_size, form = lr, "adam"
    if rectify:
        n_sma_max = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = beta2 ** step
        n_sma = n_sma_max - 2.0 * step * beta2_t / (1.0 - beta2_t)
        if n_sma >= n_sma_threshold:
            rt = math.sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0) / n_sma * n_sma_max
                           / (n_sma_max - 2.0))
            form = "rect"
        else:
            rt = 1.0 if degenerated_to_sgd else -1.0
            form = "sgd"
        step_size = step_size * rt
    if not adam_debias:
        step_size = step_size / (1.0 - beta1 ** step)
    if rectify and step_size <= 0.0:
        form = "skip"
    return step_size, form


def lamb_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
              betas: tuple[float, ...] = (0.9, 0.999), weight_decay: float = 0.0, weight_decouple: bool = True,
              fixed_decay: bool = False, rectify: bool = False, degenerated_to_sgd: bool = False,
              n_sma_threshold: int = 5, grad_averaging: bool = True, max_grad_norm: float = 1.0, adam: bool = False,
              pre_norm: bool = False, eps: float = 1e-6, maximize: bool = False, adam_debias: bool = False,
              global_grad_sq: float | None = None) -> None:
    """One LAMB step (``pytorch_optimizer.Lamb``), in place.

    State: ``exp_avg``, ``exp_avg_sq``.  ``global_grad_sq`` is the squared
    joint norm of the step's gradients for ``pre_norm`` (:func:`lamb_call`);
    by default this gradient's own.  Norms are square roots of
    :func:`blocked_lane_sum` sums, as the kernel forms them.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([3.0, 4.0]); g = np.array([1.0, -1.0])
    >>> lamb_step(p, g, {}, step=1, lr=0.01)
    >>> np.round(p, 4)     # each element moves by 0.01 / (1 - 0.9) * ||p|| / ||update|| * |update| = 0.5 / sqrt(2)
    array([2.6464, 4.3536])
    """
    lr, weight_decay, eps, max_grad_norm = float(lr), float(weight_decay), float(eps), float(max_grad_norm)
    beta1, beta2 = float(betas[0]), float(betas[1])
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    step_size, form = _lamb_step_size(int(step), lr, beta1, beta2, rectify, degenerated_to_sgd,
                                      int(n_sma_threshold), adam_debias)
    scale = 1.0
    if pre_norm:
        if global_grad_sq is None:
            global_grad_sq = _sum_sq(grad)
        d = math.sqrt(global_grad_sq) + eps
        if max_grad_norm != 0.0 and d != 0.0:
            scale = max_grad_norm / d
            scale = 1.0 if scale > 1.0 else scale
    g = grad * (-scale if maximize else scale)
    # m = beta1 m + beta3 g;  v = beta2 v + ((1 - beta2) g) g
    exp_avg *= beta1
    exp_avg += g * (1.0 - beta1 if grad_averaging else 1.0)
    exp_avg_sq *= beta2
    tmp = g * (1.0 - beta2)
    tmp *= g
    exp_avg_sq += tmp
    wd = "none" if weight_decay == 0.0 else "decay" if weight_decouple else "none" if rectify else "l2"
    pd = param * (1.0 - weight_decay * (1.0 if fixed_decay else lr)) if wd == "decay" else param
    if form == "skip":
        param[...] = pd
        return

    def update(neg_step: float) -> tuple[_Array, _Array]:
        """(the quantity whose norm is taken, the new parameter) for a step of -neg_step."""
        if form == "adam":
            u = exp_avg / (np.sqrt(exp_avg_sq) + eps)
            if wd == "l2":
                u = u + weight_decay * pd
            return u, pd + neg_step * u
        d = (neg_step * exp_avg) / (np.sqrt(exp_avg_sq) + eps) if form == "rect" else neg_step * exp_avg
        return pd + d, pd + d

    ratio = 1.0
    if not adam:
        u, _ = update(-step_size)
        wn, un = math.sqrt(_sum_sq(pd)), math.sqrt(_sum_sq(u))
        wn = 10.0 if wn > 10.0 else wn
        ratio = 1.0 if wn == 0.0 or un == 0.0 else wn / (un + eps)
    param[...] = update(-step_size * ratio)[1]


def lars_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
              weight_decay: float = 0.0, momentum: float = 0.9, dampening: float = 0.0, trust_coefficient: float = 1e-3,
              nesterov: bool = False, maximize: bool = False) -> None:
    """One LARS step (``pytorch_optimizer.LARS``), in place.

    State: ``momentum_buffer`` (from zero) when ``momentum > 0``.  Only
    parameters of two or more dimensions get weight decay and the trust
    ratio; their norms are square roots of :func:`blocked_lane_sum` sums.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[3.0, 4.0]]); g = np.array([[0.0, 1.0]])
    >>> lars_step(p, g, {}, step=1, lr=0.1, momentum=0.0, trust_coefficient=0.5)
    >>> p     # trust ratio 0.5 * 5 / 1
    array([[3.  , 3.75]])
    """
    lr, weight_decay, momentum = float(lr), float(weight_decay), float(momentum)
    g = np.negative(grad) if maximize else grad
    if param.ndim > 1 and param.size:
        pn, gn = math.sqrt(_sum_sq(param)), math.sqrt(_sum_sq(g))
        d = gn + weight_decay * pn
        ratio = float(trust_coefficient) * pn / d if pn > 0.0 and d > 0.0 else 1.0
        g = g + weight_decay * param
        g *= ratio
    if momentum > 0.0:
        buf = _zeros(state, "momentum_buffer", param)
        buf *= momentum
        buf += (1.0 - float(dampening)) * g
        g = g + momentum * buf if nesterov else buf
    param += -lr * g


def adan_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
              betas: tuple[float, ...] = (0.98, 0.92, 0.99), weight_decay: float = 0.0, weight_decouple: bool = False,
              max_grad_norm: float = 0.0, eps: float = 1e-8, maximize: bool = False,
              grad_sq_sum: float | None = None) -> None:
    """One Adan step (``pytorch_optimizer.Adan``), in place.

    State: ``exp_avg``, ``exp_avg_sq``, ``exp_avg_diff`` and ``previous_grad``
    (the negated clipped gradient of the last step; it starts as
    ``-(grad * clip)``, taken before ``maximize`` as the reference does).
    ``grad_sq_sum`` is the sum of squares the clip by ``max_grad_norm``
    uses: of every gradient clipped together (see :func:`call_reductions`);
    None for this gradient's alone.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> adan_step(p, g, {}, step=1, lr=0.01)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, weight_decay, eps = float(lr), float(weight_decay), float(eps)
    beta1, beta2, beta3 = float(betas[0]), float(betas[1]), float(betas[2])
    clip = 1.0
    if max_grad_norm > 0:
        total = _sum_sq(grad) if grad_sq_sum is None else float(grad_sq_sum)
        x = float(max_grad_norm) / (math.sqrt(total) + eps)
        clip = 1.0 if x > 1.0 else x
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    exp_avg_diff = _zeros(state, "exp_avg_diff", param)
    if "previous_grad" not in state:
        state["previous_grad"] = np.multiply(grad, -clip, out=np.empty_like(param))
    prev = state["previous_grad"]
    g = np.negative(grad) if maximize else grad
    g = np.multiply(g, clip)
    d = prev + g
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    np.subtract(d, exp_avg_diff, out=tmp)
    tmp *= 1.0 - beta2
    exp_avg_diff += tmp
    # v = v * beta3 + ((1 - beta3) * u) * u,  u = d * beta2 + g
    u = d
    u *= beta2
    u += g
    exp_avg_sq *= beta3
    np.multiply(u, 1.0 - beta3, out=tmp)
    tmp *= u
    exp_avg_sq += tmp
    denom = np.sqrt(exp_avg_sq)
    denom /= math.sqrt(1.0 - beta3 ** int(step))
    denom += eps
    if weight_decay != 0 and weight_decouple:
        param *= 1.0 - lr * weight_decay
    np.multiply(exp_avg, -(lr / (1.0 - beta1 ** int(step))), out=tmp)
    tmp /= denom
    param += tmp
    np.multiply(exp_avg_diff, -(lr * beta2 / (1.0 - beta2 ** int(step))), out=tmp)
    tmp /= denom
    param += tmp
    if weight_decay != 0 and not weight_decouple:
        param /= 1.0 + lr * weight_decay
    np.negative(g, out=prev)


def _weight_decay(param: _Array, g: _Array, lr: float, weight_decay: float, weight_decouple: bool,
                  fixed_decay: bool) -> _Array:
    """pytorch_optimizer's apply_weight_decay: the gradient to use (a new array when changed)."""
    if weight_decay == 0:
        return g
    if weight_decouple:
        param *= 1.0 - weight_decay * (1.0 if fixed_decay else lr)
        return g
    return g + weight_decay * param


def adopt_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
               betas: tuple[float, ...] = (0.9, 0.9999), clip_lambda: bool = True, weight_decay: float = 0.0,
               weight_decouple: bool = False, fixed_decay: bool = False, eps: float = 1e-6,
               maximize: bool = False) -> None:
    """One ADOPT step (``pytorch_optimizer.ADOPT``), in place.

    State: ``exp_avg`` and ``exp_avg_sq``.  Step 1 only sets ``exp_avg_sq``
    (and applies a decoupled weight decay).  ``clip_lambda``: True clips the
    normalised gradient to ``+-step ** 0.25``, None or False does not.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); st = {}
    >>> adopt_step(p, np.array([1.0, -2.0]), st, step=1, lr=0.1)
    >>> p, st["exp_avg_sq"]
    (array([0., 0.]), array([1., 4.]))
    >>> adopt_step(p, np.array([1.0, -2.0]), st, step=2, lr=0.1)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, weight_decay, eps = float(lr), float(weight_decay), float(eps)
    beta1, beta2 = float(betas[0]), float(betas[1])
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    g = np.negative(grad) if maximize else grad
    g = _weight_decay(param, g, lr, weight_decay, weight_decouple, fixed_decay)
    if int(step) == 1:
        exp_avg_sq += g * g
        return
    denom = np.maximum(np.sqrt(exp_avg_sq), eps)          # NaN stays NaN, as torch's clamp_min
    u = g / denom
    if clip_lambda:
        c = math.pow(int(step), 0.25)
        u = np.minimum(np.maximum(u, -c), c)
    tmp = np.empty_like(param)
    np.subtract(u, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    np.multiply(exp_avg, -lr, out=tmp)
    param += tmp
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp


def _c_div(a: float, b: float) -> float:
    """a / b as C computes it in double (IEEE: a zero divisor gives +-inf or NaN)."""
    if b != 0:
        return a / b
    if a == 0 or a != a:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _c_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def ademamix_alpha_beta3(step: int, alpha: float, betas: Sequence[float],
                         t_alpha_beta3: float | None) -> tuple[float, float]:
    """AdEMAMix's alpha and beta3 at ``step`` (pytorch_optimizer's schedule_alpha and schedule_beta3).

    Examples
    --------
    >>> ademamix_alpha_beta3(10, 5.0, (0.9, 0.999, 0.9999), None)
    (5.0, 0.9999)
    >>> a, b3 = ademamix_alpha_beta3(10, 5.0, (0.9, 0.999, 0.9999), 100.0)
    >>> a, round(b3, 6)
    (0.5, 0.999009)
    """
    alpha, beta1, beta3 = float(alpha), float(betas[0]), float(betas[2])
    if not t_alpha_beta3:
        return alpha, beta3
    t = float(t_alpha_beta3)
    a = int(step) * alpha / t
    lb1, lb3, f = math.log(beta1), math.log(beta3), int(step) / t
    b = _c_exp(_c_div(lb1 * lb3, (1.0 - f) * lb3 + f * lb1))
    return (alpha if alpha < a else a), (beta3 if beta3 < b else b)


def ademamix_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, lr: float = 1e-3,
                  betas: tuple[float, ...] = (0.9, 0.999, 0.9999), weight_decay: float = 0.0,
                  weight_decouple: bool = False, fixed_decay: bool = False, alpha: float = 5.0,
                  t_alpha_beta3: float | None = None, eps: float = 1e-8, maximize: bool = False) -> None:
    """One AdEMAMix step (``pytorch_optimizer.AdEMAMix``), in place.

    State: ``exp_avg``, ``exp_avg_sq`` and ``exp_avg_slow``.
    ``t_alpha_beta3`` None or 0: no warmup of alpha and beta3.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> ademamix_step(p, g, {}, step=1, lr=0.01, alpha=0.0)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, weight_decay, eps = float(lr), float(weight_decay), float(eps)
    beta1, beta2 = float(betas[0]), float(betas[1])
    alpha_t, beta3_t = ademamix_alpha_beta3(step, alpha, betas, t_alpha_beta3)
    exp_avg, exp_avg_sq = _zeros(state, "exp_avg", param), _zeros(state, "exp_avg_sq", param)
    exp_avg_slow = _zeros(state, "exp_avg_slow", param)
    g = np.negative(grad) if maximize else grad
    g = _weight_decay(param, g, lr, weight_decay, weight_decouple, fixed_decay)
    tmp = np.empty_like(param)
    np.subtract(g, exp_avg, out=tmp)
    tmp *= 1.0 - beta1
    exp_avg += tmp
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    np.subtract(g, exp_avg_slow, out=tmp)
    tmp *= 1.0 - beta3_t
    exp_avg_slow += tmp
    denom = np.sqrt(exp_avg_sq)
    denom /= math.sqrt(1.0 - beta2 ** int(step))
    denom += eps
    update = exp_avg / (1.0 - beta1 ** int(step))
    np.multiply(exp_avg_slow, alpha_t, out=tmp)
    update += tmp
    update *= -lr
    update /= denom
    param += update


# ---- per-group reductions, DoG ---------------------------------------------

def group_reductions(rule: str, params: list[_Array], grads: list[_Array], states: list[dict[str, Any]],
                     group: dict[str, Any], hyperparameters: dict[str, Any]) -> list[dict[str, Any]]:
    """The keyword arguments each tensor's ``<rule>_step`` takes from sums over its parameter group.

    Most rules need none (a list of empty dicts).  A rule whose step size is
    shared by the tensors of a group (DoG: norms over the whole group) has a
    ``<rule>_group(params, grads, states, group, hyperparameters)`` that forms
    the group's sums in the engine's order (tensors in their order in the
    group), advances the group's persistent scalars in the dict ``group``
    (the optimizer keeps them in its ``param_groups``; a new group's dict is
    empty) and returns each tensor's keyword arguments.  Call it once per
    group and step, before the group's ``<rule>_step`` calls; ``params``,
    ``grads`` and ``states`` are the group's, ``hyperparameters`` its dict.

    Examples
    --------
    >>> import numpy as np
    >>> group = {}
    >>> group_reductions("dog", [np.array([3.0, 4.0])], [np.array([1.0, 0.0])], [{}], group,
    ...                  dict(reps_rel=0.5, eps=0.0))
    [{'eta': 3.0}]
    >>> group        # rbar = 0.5 (1 + ||x0||), G = ||g||^2 + eps, eta = lr rbar / sqrt(G)
    {'rbar': 3.0, 'G': 1.0, 'eta': 3.0}
    >>> group_reductions("adam", [np.ones(2)], [np.ones(2)], [{}], {}, {})
    [{}]
    """
    fn = globals().get(f"{rule}_group")
    return fn(params, grads, states, group, hyperparameters) if fn is not None else [{} for _ in params]


def _dog_options(reps_rel: float = 1e-6, lr: float = 1.0, weight_decay: float = 0.0, eps: float = 1e-8,
                 init_eta: float | None = None,
                 layer_wise: bool = False) -> tuple[float, float, float, float, float | None, bool]:
    return (float(reps_rel), float(lr), float(weight_decay), float(eps),
            None if init_eta is None else float(init_eta), bool(layer_wise))


def _dog_x0(state: dict[str, Any], param: _Array) -> _Array:
    """The state ``init_buffer``: the parameter before its first step."""
    if "init_buffer" not in state:
        state["init_buffer"] = param.copy()
    return state["init_buffer"]


def _dog_sums(param: _Array, grad: _Array, state: dict[str, Any], weight_decay: float,
              first: bool) -> tuple[float, float]:
    """(||g||^2, ||p - x0||^2, or ||p||^2 on the first step) of one tensor, as the kernel's phase 0 forms them:
    g and p - x0 rounded to the tensor's dtype, squared and summed in float64 (:func:`blocked_lane_sum`)."""
    x0 = _dog_x0(state, param)
    g = _grad(param, grad, weight_decay, False)
    return _sum_sq(g), _sum_sq(param if first else param - x0)


def _dog_advance(rbar: float, G: float, d2: float, g2: float, reps_rel: float, lr: float, eps: float,
                 init_eta: float | None) -> tuple[float, float, float]:
    """(rbar, G, eta) after one step whose sums are d2 and g2 (:func:`_dog_sums`); the first step
    is the one that finds G == 0."""
    first = G == 0.0
    if first:
        rbar = 0.0 if init_eta is not None else reps_rel * (1.0 + math.sqrt(d2))
        G = g2 + eps
    else:
        d = math.sqrt(d2)
        if d > rbar or d != d:      # torch.maximum: NaN wins
            rbar = d
        G = G + g2
    eta = 0.0 if G == 0.0 else lr * rbar / math.sqrt(G)
    if first and init_eta is not None:
        eta = init_eta
    return rbar, G, eta


def dog_group(params: list[_Array], grads: list[_Array], states: list[dict[str, Any]], group: dict[str, Any],
              hyperparameters: dict[str, Any]) -> list[dict[str, Any]]:
    """DoG's step size for the tensors of one group (see :func:`group_reductions`).

    The norms are taken over all of the group's tensors as one vector, as the
    authors' ``dog.DoG`` does: the group's squared gradient norm and squared
    distance from ``x0`` (each tensor's sum by :func:`blocked_lane_sum`,
    the tensors added in order) advance its ``rbar`` and ``G``, kept in
    ``group`` with the step size ``eta``, which every tensor gets.  A group
    whose tensors have no elements is left as it is.  With ``layer_wise``
    each tensor forms its own (:func:`dog_step`): nothing to do here.

    Examples
    --------
    >>> import numpy as np
    >>> ps, gs, group = [np.zeros(2), np.ones(3)], [np.ones(2), np.ones(3)], {}
    >>> hp = dict(reps_rel=1e-6, lr=1.0, weight_decay=0.0, eps=1e-8, init_eta=0.5, layer_wise=False)
    >>> dog_group(ps, gs, [{}, {}], group, hp)       # the first step's eta is init_eta, for every tensor
    [{'eta': 0.5}, {'eta': 0.5}]
    """
    reps_rel, lr, weight_decay, eps, init_eta, layer_wise = _dog_options(**hyperparameters)
    if layer_wise:
        return [{} for _ in params]
    first = group.get("G", 0.0) == 0.0
    g2 = d2 = 0.0
    size = 0
    for p, g, st in zip(params, grads, states):
        tg, td = _dog_sums(p, g, st, weight_decay, first)
        g2 += tg
        d2 += td
        size += p.size
    if size:
        rbar, G, eta = _dog_advance(group.get("rbar", 0.0), group.get("G", 0.0), d2, g2, reps_rel, lr, eps,
                                    init_eta)
        group.update(rbar=rbar, G=G, eta=eta)
    return [{"eta": group.get("eta", 0.0)} for _ in params]


def dog_step(param: _Array, grad: _Array, state: dict[str, Any], *, step: int, reps_rel: float = 1e-6, lr: float = 1.0,
             weight_decay: float = 0.0, eps: float = 1e-8, init_eta: float | None = None, layer_wise: bool = False,
             eta: float | None = None) -> None:
    """One DoG step, in place (Ivgi, Hinder and Carmon 2023; the authors' ``dog.DoG``; ``dog.LDoG``: ``layer_wise``).

    ::

        g = grad + weight_decay * p
        first step:  rbar = reps_rel (1 + ||p||)   (0 with init_eta);   G = ||g||^2 + eps
        later:       rbar = max(rbar, ||p - x0||);                      G = G + ||g||^2
        eta = lr rbar / sqrt(G)   (0 when G == 0; init_eta instead on the first step when given)
        p += -eta g

    The first step is the one that finds ``G == 0``.  State: ``init_buffer``
    (x0, a copy of the parameter before its first step).  ``eta`` is the step
    size of the tensor's group, formed by :func:`dog_group` over all of the
    group's tensors; without it (``layer_wise``, or a tensor stepped on its
    own: a group of one) the tensor forms its own from its norms and keeps
    ``rbar``, ``G`` and ``eta`` as float64 scalars in ``state`` (a tensor with
    no elements is left as it is).  Norms are square roots of
    :func:`blocked_lane_sum` sums, as the kernel forms them.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([3.0, 4.0]); g = np.array([1.0, 0.0]); st = {}
    >>> dog_step(p, g, st, step=1, reps_rel=0.5, eps=0.0)     # eta = 0.5 (1 + 5) / 1
    >>> p
    array([0., 4.])
    >>> float(st["rbar"]), float(st["G"]), float(st["eta"])
    (3.0, 1.0, 3.0)
    >>> dog_step(p, g, st, step=2, reps_rel=0.5, eps=0.0)     # max(3, ||p - x0|| = 3) / sqrt(1 + 1)
    >>> np.round(p, 4)
    array([-2.1213,  4.    ])
    """
    reps_rel, lr, weight_decay, eps, init_eta, layer_wise = _dog_options(reps_rel, lr, weight_decay, eps, init_eta,
                                                                         layer_wise)
    _dog_x0(state, param)
    if eta is None or layer_wise:
        rbar, G, e = _scalar(state, "rbar", 0.0), _scalar(state, "G", 0.0), _scalar(state, "eta", 0.0)
        if param.size == 0:
            return
        g2, d2 = _dog_sums(param, grad, state, weight_decay, float(G) == 0.0)
        r, Gn, eta = _dog_advance(float(rbar), float(G), d2, g2, reps_rel, lr, eps, init_eta)
        rbar[...], G[...], e[...] = r, Gn, eta
    g = _grad(param, grad, weight_decay, False)
    param += -float(eta) * g


# ---------------------------------------------------------------------------
# Rules whose step size is shared by every group (Prodigy, D-Adaptation): a
# step of the whole optimizer at once, ``<rule>_groups(groups, grads,
# states)``.  ``groups`` are parameter-group dicts (``{"params": [arrays],
# **hyperparameters}``) that also hold the rule's per-group scalars (``d``,
# ...), updated in place as the reference implementations update theirs;
# ``grads`` and ``states`` are per parameter, in group order.  Sums are formed
# as the engine forms them: each tensor's by blocks (:func:`blocked_lane_sum`),
# the tensors of a group in order, the groups in order, in float64.

def step_groups(rule: str, groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]],
                steps: list[int]) -> None:
    """One step of a whole optimizer over parameter groups, as etakit's optimizers take it.

    ``groups`` are parameter-group dicts (``{"params": [arrays], **hyperparameters}``,
    every hyperparameter present); ``grads``, ``states`` (dicts) and ``steps``
    (the 1-based number of this step of each parameter) are per parameter, in
    group order.  A rule with per-group scalars has ``<rule>_groups`` and
    updates them in the group dicts; the others take
    :func:`call_reductions` and one ``<rule>_step`` per parameter.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2)
    >>> step_groups("sgd", [{"params": [p], "lr": 0.5}], [np.ones(2)], [{}], [1])
    >>> p
    array([-0.5, -0.5])
    """
    fn = globals().get(f"{rule}_groups")
    if fn is not None:
        fn(groups, grads, states)
        return
    hps = [{k: v for k, v in g.items() if k != "params"} for g in groups for _ in g["params"]]
    params = [p for g in groups for p in g["params"]]
    extra = call_reductions(rule, grads, hps)
    for p, grad, st, step, hp, kw in zip(params, grads, states, steps, hps, extra):
        step_rule(rule, p, grad, st, step=int(step), **hp, **kw)


def _strided_sum(x: _Array, n: int, k: int) -> float:
    """The engine's sum of ``x``, the float64 values of the elements 0, k, 2k, ... of a tensor of n
    elements: blocks of BLOCK tensor elements, each the sum of the values it keeps (in lanes)."""
    if k == 1:
        return blocked_lane_sum(x)
    total = 0.0
    for lo in range(0, n, BLOCK):
        total += blocked_lane_sum(x[-(-lo // k):-(-min(lo + BLOCK, n) // k)])
    return total


def _members(groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(group index, group, param, grad, state) for every parameter, in group order."""
    out, i = [], 0
    for gi, g in enumerate(groups):
        for p in g["params"]:
            out.append((gi, g, p, grads[i], states[i]))
            i += 1
    return out


def _start(groups: list[dict[str, Any]], **starts: Any) -> None:
    """Give every group the per-group scalars it lacks: a number, or the value of the named key."""
    for g in groups:
        for name, v in starts.items():
            if name not in g:
                g[name] = g[v] if isinstance(v, str) else v


def _f64(x: _Array) -> _Array:
    return np.asarray(x, dtype=np.float64)


def prodigy_groups(groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]]) -> None:
    """One Prodigy step (``prodigyopt.Prodigy``) over every group, in place.

    State per parameter: ``s`` and ``p0`` (every ``slice_p``-th element),
    ``exp_avg`` (with ``betas[0] > 0``), ``exp_avg_sq``.  Per group: ``d``,
    ``d_max``, ``d_numerator``, ``k`` (shared: the first group's are read),
    ``d_denom``, ``d_hat``.  See :class:`etakit.Prodigy`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([1.0, -1.0]); st = [{}]
    >>> groups = [{"params": [p], "lr": 1.0, "betas": (0.9, 0.999), "beta3": None, "eps": 1e-8,
    ...            "weight_decay": 0.0, "decouple": True, "use_bias_correction": False,
    ...            "safeguard_warmup": False, "d0": 1e-6, "d_coef": 1.0, "growth_rate": float("inf"),
    ...            "slice_p": 1}]
    >>> prodigy_groups(groups, [np.array([0.5, 0.5])], st)
    >>> groups[0]["d"], groups[0]["k"], sorted(st[0])       # no distance travelled yet: d stays
    (1e-06, 1, ['exp_avg', 'exp_avg_sq', 'p0', 's'])
    """
    _start(groups, d="d0", d_max="d0", d_numerator=0.0, k=0)
    g0, last = groups[0], groups[-1]
    beta1, beta2 = float(g0["betas"][0]), float(g0["betas"][1])
    beta3 = math.sqrt(beta2) if g0["beta3"] is None else float(g0["beta3"])
    lr = max(float(g["lr"]) for g in groups)
    d, k = float(g0["d"]), g0["k"]
    bc = math.sqrt(1.0 - beta2 ** (k + 1)) / (1.0 - beta1 ** (k + 1)) if g0["use_bias_correction"] else 1.0
    dlr = d * lr * bc
    decouple, mom = g0["decouple"], beta1 > 0.0
    members = _members(groups, grads, states)

    def gradient(g: dict[str, Any], p: _Array, grad: _Array) -> _Array:
        wd = float(g["weight_decay"])
        return grad + wd * p if wd != 0.0 and not decouple else grad

    dots, l1s = [0.0] * len(groups), [0.0] * len(groups)
    for gi, g, p, grad, st in members:
        sp = int(g["slice_p"])
        if "s" not in st:
            st["s"] = np.zeros(-(-p.size // sp), dtype=p.dtype)
            st["p0"] = p.ravel()[::sp].copy()
            if mom:
                st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
        if float(g["lr"]) > 0.0:
            gs = gradient(g, p.ravel()[::sp], grad.ravel()[::sp])
            x = st["p0"] - p.ravel()[::sp]
            dots[gi] += _strided_sum(_f64(gs) * _f64(x), p.size, sp)
            s = st["s"]
            s *= beta3
            s += (d / float(g["d0"]) * (d if g["safeguard_warmup"] else dlr)) * gs
            l1s[gi] += _strided_sum(np.abs(_f64(s)), p.size, sp)
    num = den = 0.0
    for g, dot, l1 in zip(groups, dots, l1s):
        if float(g["lr"]) > 0.0:
            num += d / float(g["d0"]) * dlr * dot
            den += l1
    d_numerator = float(g0["d_numerator"]) * beta3 + num
    update, dn = den != 0.0, d
    if update:
        d_hat = float(g0["d_coef"]) * d_numerator / den
        if dn == float(last["d0"]):
            dn = max(dn, d_hat)
        d_max = max(float(g0["d_max"]), d_hat)
        dn = min(d_max, dn * float(g0["growth_rate"]))
        for g in groups:
            g.update(d=dn, d_max=d_max, d_numerator=d_numerator, k=g["k"] + 1, d_denom=den, d_hat=d_hat)
    for gi, g, p, grad, st in members:
        gr = gradient(g, p, grad)
        v = st["exp_avg_sq"]
        if float(g["lr"]) > 0.0:
            if mom:
                m = st["exp_avg"]
                m *= beta1
                m += (d * (1.0 - beta1)) * gr
            v *= beta2
            tmp = (d * d * (1.0 - beta2)) * gr
            tmp *= gr
            v += tmp
        if update:
            den_ = np.sqrt(v)
            den_ += dn * float(g["eps"])
            wd = float(g["weight_decay"])
            if wd != 0.0 and decouple:
                p += (-wd * dlr) * p
            step = (-dlr) * st["exp_avg"] if mom else (-dlr * dn) * gr
            step /= den_
            p += step


def dadapt_adam_groups(groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]]) -> None:
    """One DAdaptAdam step (``dadaptation.DAdaptAdam``) over every group, in place.

    State per parameter: ``s``, ``exp_avg``, ``exp_avg_sq``.  Per group:
    ``d``, ``numerator_weighted``, ``k`` (shared: the first group's are
    read).  See :class:`etakit.DAdaptAdam`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([1.0, -1.0]); st = [{}]
    >>> groups = [{"params": [p], "lr": 1.0, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
    ...            "decouple": False, "use_bias_correction": False, "d0": 1e-6, "growth_rate": float("inf"),
    ...            "layer_scale": 1.0}]
    >>> dadapt_adam_groups(groups, [np.array([0.5, 0.5])], st)
    >>> groups[0]["d"], groups[0]["k"], sorted(st[0])
    (1e-06, 1, ['exp_avg', 'exp_avg_sq', 's'])
    """
    _start(groups, d="d0", numerator_weighted=0.0, k=0)
    g0 = groups[0]
    beta1, beta2 = float(g0["betas"][0]), float(g0["betas"][1])
    lr = max(float(g["lr"]) for g in groups)
    d, k = float(g0["d"]), g0["k"]
    bc = math.sqrt(1.0 - beta2 ** (k + 1)) / (1.0 - beta1 ** (k + 1)) if g0["use_bias_correction"] else 1.0
    dlr = d * lr * bc
    sb2 = math.sqrt(beta2)
    decouple = g0["decouple"]
    members = _members(groups, grads, states)
    dots, l1s = [0.0] * len(groups), [0.0] * len(groups)
    for gi, g, p, grad, st in members:
        for name in ("s", "exp_avg", "exp_avg_sq"):
            _zeros(st, name, p)
        if float(g["lr"]) > 0.0:
            wd, eps, r = float(g["weight_decay"]), float(g["eps"]), float(g["layer_scale"])
            gr = grad + wd * p if wd != 0.0 and not decouple else grad
            s, m, v = st["s"], st["exp_avg"], st["exp_avg_sq"]
            den = np.sqrt(v)
            den += eps
            dots[gi] += blocked_lane_sum(_f64(gr) * _f64(s / den))
            m *= beta1
            m += (r * dlr * (1.0 - beta1)) * gr
            v *= beta2
            tmp = (1.0 - beta2) * gr
            tmp *= gr
            v += tmp
            s *= sb2
            s += (dlr * (1.0 - sb2)) * gr
            l1s[gi] += blocked_lane_sum(np.abs(_f64(s)))
    num = den = 0.0
    for g, dot, l1 in zip(groups, dots, l1s):
        if float(g["lr"]) > 0.0:
            num += float(g["layer_scale"]) * dlr * dot
            den += float(g["layer_scale"]) * l1
    nw = sb2 * float(g0["numerator_weighted"]) + (1.0 - sb2) * num
    if den == 0.0:
        return                      # the reference returns: nothing but the moments and s changes
    if lr > 0.0:
        d = max(d, min(nw / ((1.0 - sb2) * den), d * float(g0["growth_rate"])))
    for g in groups:
        g.update(d=d, numerator_weighted=nw, k=g["k"] + 1)
    for gi, g, p, grad, st in members:
        wd, eps = float(g["weight_decay"]), float(g["eps"])
        if wd != 0.0 and decouple:
            p += (-wd * dlr) * p
        den_ = np.sqrt(st["exp_avg_sq"])
        den_ += eps
        p -= st["exp_avg"] / den_


def dadapt_sgd_groups(groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]]) -> None:
    """One DAdaptSGD step (``dadaptation.DAdaptSGD``) over every group, in place.

    State per parameter: ``z``, ``s``, ``x0``.  Per group: ``d``,
    ``numerator_weighted``, ``k``, ``g0_norm`` (shared: the first group's
    are read).  See :class:`etakit.DAdaptSGD`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([3.0, -4.0]); st = [{}]
    >>> groups = [{"params": [p], "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "d0": 1e-6,
    ...            "growth_rate": float("inf")}]
    >>> dadapt_sgd_groups(groups, [p.copy()], st)
    >>> groups[0]["g0_norm"], p                 # the first step moves by d0 along -grad / |grad|
    (5.0, array([ 2.9999994, -3.9999992]))
    """
    _start(groups, d="d0", numerator_weighted=0.0, k=0, g0_norm=0.0)
    g0 = groups[0]
    lr = max(float(g["lr"]) for g in groups)
    d = float(g0["d"])
    members = _members(groups, grads, states)
    g0_norm = float(g0["g0_norm"])
    if g0["k"] == 0:
        gsq = [0.0] * len(groups)
        for gi, g, p, grad, st in members:
            if float(g["lr"]) > 0.0:
                x = _f64(grad)
                gsq[gi] += blocked_lane_sum(x * x)
        total = 0.0
        for g, s in zip(groups, gsq):
            if float(g["lr"]) > 0.0:
                total += s
        g0_norm = math.sqrt(total)
    if g0_norm == 0.0:
        return                      # the reference divides by zero: nothing changes
    dlr = d * lr / g0_norm
    ck = 1.0 - float(g0["momentum"])
    dots, sqs = [0.0] * len(groups), [0.0] * len(groups)
    for gi, g, p, grad, st in members:
        if "z" not in st:
            st["z"], st["s"], st["x0"] = p.copy(), np.zeros_like(p), p.copy()
        wd = float(g["weight_decay"])
        gr = grad + wd * p if wd != 0.0 else grad
        s = st["s"]
        if float(g["lr"]) > 0.0:
            dots[gi] += blocked_lane_sum(_f64(gr) * _f64(s))
            s += dlr * gr
            sqs[gi] += blocked_lane_sum(_f64(s) * _f64(s))
        np.subtract(st["x0"], s, out=st["z"])
        p *= 1.0 - ck
        p += ck * st["z"]
    num = den = 0.0
    for g, dot, sq in zip(groups, dots, sqs):
        if float(g["lr"]) > 0.0:
            num += dot
            den += sq
    nw = float(g0["numerator_weighted"]) + dlr * num
    if lr > 0.0 and den > 0.0:
        d = max(d, min(2.0 * nw / math.sqrt(den), d * float(g0["growth_rate"])))
    k = g0["k"]
    for g in groups:                # the first group's count, in every group (as the reference)
        g.update(d=d, numerator_weighted=nw, k=k + 1, g0_norm=g0_norm)


def dadapt_adagrad_groups(groups: list[dict[str, Any]], grads: list[_Array], states: list[dict[str, Any]]) -> None:
    """One DAdaptAdaGrad step (``dadaptation.DAdaptAdaGrad``, dense gradients) over every group, in place.

    State per parameter: ``alphak`` (starting at 1e-6), ``sk``, ``x0``.  Per
    group: ``d``, ``gsq_weighted``, ``sksq_weighted``, ``skl1``, ``k``
    (shared: the first group's are read).  The changes of ``sksq_weighted``
    and ``skl1`` are summed element by element.  See :class:`etakit.DAdaptAdaGrad`.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([3.0, -4.0]); st = [{}]
    >>> groups = [{"params": [p], "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "eps": 1e-6, "d0": 1e-6,
    ...            "growth_rate": float("inf")}]
    >>> dadapt_adagrad_groups(groups, [p.copy()], st)
    >>> groups[0]["skl1"], st[0]["alphak"]
    (7e-06, array([ 9.000001, 16.000001]))
    """
    _start(groups, d="d0", gsq_weighted=0.0, sksq_weighted=0.0, skl1=0.0, k=0)
    g0 = groups[0]
    lr, d = float(g0["lr"]), float(g0["d"])
    dlr = d * lr
    members = _members(groups, grads, states)
    dsq, dl1, gsq = [0.0] * len(groups), [0.0] * len(groups), [0.0] * len(groups)
    for gi, g, p, grad, st in members:
        if "alphak" not in st:
            st["alphak"], st["sk"], st["x0"] = np.full_like(p, 1e-6), np.zeros_like(p), p.copy()
        wd, eps = float(g["weight_decay"]), float(g["eps"])
        gr = grad + wd * p if wd != 0.0 else grad
        a, sk = st["alphak"], st["sk"]
        old = sk.copy()
        q_old = (sk * sk) / (np.sqrt(a) + eps)
        a += gr * gr
        den = np.sqrt(a) + eps
        sk += dlr * gr
        dsq[gi] += blocked_lane_sum(_f64((sk * sk) / den) - _f64(q_old))
        dl1[gi] += blocked_lane_sum(np.abs(_f64(sk)) - np.abs(_f64(old)))
        gsq[gi] += blocked_lane_sum(_f64((gr * gr) / den))
    csq = cl1 = cg = 0.0
    for a_, b_, c_ in zip(dsq, dl1, gsq):
        csq += a_
        cl1 += b_
        cg += c_
    sksq = float(g0["sksq_weighted"]) + csq
    skl1 = float(g0["skl1"]) + cl1
    if skl1 == 0.0:
        return                      # the reference returns: nothing but alphak and sk changes
    gsqw = float(g0["gsq_weighted"]) + dlr * dlr * cg
    if lr > 0.0:
        d = max(d, min((sksq - gsqw) / skl1, d * float(g0["growth_rate"])))
    for g in groups:
        g.update(d=d, gsq_weighted=gsqw, sksq_weighted=sksq, skl1=skl1, k=g["k"] + 1)
    ck = 1.0 - float(g0["momentum"])
    for gi, g, p, grad, st in members:
        z = st["x0"] - st["sk"] / (np.sqrt(st["alphak"]) + float(g["eps"]))
        if float(g0["momentum"]) != 0.0:
            p *= 1.0 - ck
            p += ck * z
        else:
            p[...] = z


# ---------------------------------------------------------------- low-precision state
#
# Optimizer state kept in fewer bytes than the parameters (``state_dtype=`` of
# the optimizers): the step decodes the state of each element to float32,
# runs the rule's float32 step and encodes the result back.  These functions
# are the specification the C engine (csrc/lowp.c, csrc/lowp.h) follows bit
# for bit:
#
# - bfloat16: the upper 16 bits of a float32.  Encoding rounds to nearest,
#   ties to even (NaN stays a quiet NaN), or stochastically: it adds 16 random
#   bits to the float32's bits and truncates, so a value rounds up with
#   probability equal to its distance from the lower neighbour.  The bits
#   come from a counter-based hash of (the tensor's seed, the step, the state
#   slot, the element's index), the same whatever the thread count or SIMD
#   variant (``sr_bits``).
# - 8-bit blockwise ("int8"): blocks of ``Q8_BLOCK`` = 256 elements, each with
#   one float32 scale, its largest magnitude (``absmax``), and per element a
#   code, the index (uint8) of the nearest value of x / absmax in a map of 256
#   values: bitsandbytes' signed dynamic map for state that may be negative,
#   its unsigned map for state that is not (second moments).  Decoding is
#   ``map[code] * absmax`` in float32, as bitsandbytes' dequantize_blockwise.

Q8_BLOCK = 256
_M64 = (1 << 64) - 1


def _fma32(a: float, b: float, c: float) -> np.float32:
    """float32 fused multiply-add (one rounding); exact here: the double sum is re-rounded once
    to float32, and for the values of the maps no double rounding occurs (the tests check the maps
    against bitsandbytes' own)."""
    return np.float32(np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c)))


def _linspace32(start: float, end: float, steps: int) -> _Array:
    """float32 ``torch.linspace`` as torch computes it on the CPU: the first half from the start, the
    second from the end, each value one fused multiply-add."""
    a, b = np.float32(start), np.float32(end)
    step = np.float32((b - a) / np.float32(steps - 1))
    return np.array([_fma32(step, i, a) if i < steps // 2 else _fma32(-step, steps - 1 - i, b)
                     for i in range(steps)], dtype=np.float32)


def dynamic_map(signed: bool = True) -> _Array:
    """The 256 values of bitsandbytes' dynamic quantization map (``create_dynamic_map(signed)`` with
    its defaults, 7 exponent bits, 8 bits), sorted, as float32.

    For each exponent i = 0..6, the midpoints of ``linspace(0.1, 1, 2**i + 1)`` (signed) or of
    ``linspace(0.1, 1, 2**(i+1) + 1)`` (unsigned), times 10**(i - 6) (and their negatives, signed),
    plus 0 and 1.

    Examples
    --------
    >>> m = dynamic_map(signed=True)
    >>> m.dtype, m.shape, float(m[0]) < 0 < float(m[-1]) == 1.0
    (dtype('float32'), (256,), True)
    """
    data = []
    for i in range(7):
        b = _linspace32(0.1, 1.0, (2 ** i if signed else 2 ** (i + 1)) + 1)
        means = (b[:-1] + b[1:]) / np.float32(2)
        v = np.float32(10.0 ** (i - 6)) * means
        data += list(v)
        if signed:
            data += list(-v)
    data += [np.float32(0), np.float32(1)]
    out = np.sort(np.array(data, dtype=np.float32))
    assert out.shape == (256,)
    return out


def q8_thresholds(qmap: _Array) -> _Array:
    """The 255 rounding thresholds of a map: t[c] is the smallest float32 above the midpoint of
    qmap[c] and qmap[c + 1], so a float32 x gets code ``#{c : x >= t[c]}``: the nearest value, a tie
    (x exactly at a midpoint) going to the lower code."""
    qmap = np.asarray(qmap, dtype=np.float32)
    mid = (qmap[:-1].astype(np.float64) + qmap[1:].astype(np.float64)) / 2
    t = mid.astype(np.float32)
    low = t.astype(np.float64) <= mid
    t[low] = np.nextafter(t[low], np.float32(np.inf))
    return t


def q8_quantize(x: _Array, signed: bool = True) -> tuple[_Array, _Array]:
    """Blockwise 8-bit quantization of a float32 array: ``(codes, absmax)``.

    ``absmax[b]`` is the largest |x| of block b (NaN if the block holds a NaN); codes are the nearest
    map values of ``x * (1 / absmax)`` (float32; an all-zero block has scale 0 and the code of 0).
    NaN, and x above every threshold, get code 255.  With the unsigned map (``signed=False``, second
    moments) a positive x never gets code 0 but the smallest positive code: a non-zero first moment
    over a second moment rounded to 0 would make a step of m / eps.

    Examples
    --------
    >>> codes, absmax = q8_quantize(np.array([0.5, -1.0, 0.0], dtype=np.float32))
    >>> codes.dtype, absmax
    (dtype('uint8'), array([1.], dtype=float32))
    >>> q8_dequantize(codes, absmax, signed=True)
    array([ 0.50078124, -0.99296874,  0.        ], dtype=float32)
    """
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    n = x.size
    nb = -(-n // Q8_BLOCK)
    pad = np.zeros(nb * Q8_BLOCK, dtype=np.float32)
    pad[:n] = np.abs(x)
    blocks = pad.reshape(nb, Q8_BLOCK)
    with np.errstate(invalid="ignore"):
        absmax = blocks.max(axis=1) if nb else np.zeros(0, np.float32)   # NaN if any NaN
    absmax = absmax.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.where(absmax == 0, np.float32(0), np.float32(1) / absmax).astype(np.float32)
        xn = x * np.repeat(inv, Q8_BLOCK)[:n]
    t = q8_thresholds(dynamic_map(signed))
    codes = np.searchsorted(t, xn, side="right").astype(np.uint8)      # NaN sorts last: 255
    if not signed:
        # a positive second moment never rounds to 0 (the step would divide by eps alone)
        codes[(codes == 0) & (x > 0)] = 1
    return codes, absmax


def q8_dequantize(codes: _Array, absmax: _Array, signed: bool = True) -> _Array:
    """float32 values of 8-bit codes: ``map[code] * absmax`` of the code's block of 256."""
    codes = np.asarray(codes).ravel()
    scale = np.repeat(np.asarray(absmax, dtype=np.float32), Q8_BLOCK)[:codes.size]
    return (dynamic_map(signed)[codes] * scale).astype(np.float32)


def bf16_round(x: _Array) -> _Array:
    """float32 to bfloat16 bits (uint16), rounding to nearest, ties to even; NaN stays a quiet NaN.

    Examples
    --------
    >>> bf16_round(np.array([1.0, 1.00390625, 1.01171875], dtype=np.float32))   # ties go to even
    array([16256, 16256, 16258], dtype=uint16)
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40),
                 (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16))
    return r.astype(np.uint16)


def bf16_decode(bits: _Array) -> _Array:
    """bfloat16 bits (uint16) to float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _splitmix64(z: Any) -> Any:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _lowbias32(x: Any) -> Any:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def tensor_seed(seed: int, index: int) -> int:
    """The random stream of the tensor at position ``index`` of an optimizer with seed ``seed``."""
    return _splitmix64((int(seed) + int(index) * 0x9E3779B97F4A7C15) & _M64)


def sr_bits(seed: int, step: int, slot: int, start: int, n: int) -> _Array:
    """The 16 random bits (uint32 < 2**16) stochastic rounding adds to elements start..start+n-1 of
    state slot ``slot`` of a tensor with stream ``seed`` at step ``step``: a hash of the four."""
    k = _splitmix64(_splitmix64(int(seed) & _M64) ^ (((int(step) << 3) | int(slot)) & _M64))
    ka, kb = np.uint32(k & 0xFFFFFFFF), k >> 32
    idx = np.arange(start, start + n, dtype=np.uint64)
    lo = (idx & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (idx >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        kbh = (np.uint32(kb) + hi * np.uint32(0x9E3779B9)).astype(np.uint32)
        return _lowbias32(_lowbias32(lo ^ ka) ^ kbh) >> np.uint32(16)


def bf16_round_stochastic(x: _Array, seed: int, step: int, slot: int, start: int = 0) -> _Array:
    """float32 to bfloat16 bits with stochastic rounding (``sr_bits``); NaN stays a quiet NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).ravel().view(np.uint32)
    r = sr_bits(seed, step, slot, start, u.size)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), (u + r) >> np.uint32(16))
    return out.astype(np.uint16).reshape(np.shape(x))


def lowp_step(rule: str, param: _Array, grad: _Array, state: dict[str, Any], *, step: int, state_dtype: str,
              nonneg: Sequence[str] = (), slots: Sequence[str] = (), stochastic_rounding: bool = False, seed: int = 0,
              initial: dict[str, Any] | None = None, **hyperparameters: Any) -> None:
    """One step of ``rule`` with low-precision state, as the C engine takes it: every element-wise
    state buffer is decoded to float32, the rule's float32 step runs, and the buffers are encoded.

    ``state`` holds, per state name, the encoded buffer: ``uint16`` bfloat16 bits, or, for
    ``state_dtype="int8"``, the uint8 codes with their scales under ``<name>_absmax``.  ``nonneg``
    names the buffers that use the unsigned map; ``slots`` lists the rule's state names in slot order
    (the slot index enters the stochastic-rounding hash); ``seed`` is the tensor's stream
    (``tensor_seed``).  Scalar state (float64 0-d arrays) is passed through as it is.  ``initial``
    ({name: value}) names buffers the optimizer creates filled with a value before the first step
    (Adagrad's ``sum``, ``initial_accumulator_value``): created here when missing, and stored encoded,
    as the optimizer stores them.
    """
    for name, value in (initial or {}).items():
        if name not in state:
            fill = np.full(np.shape(param), value, dtype=np.float32)
            if state_dtype == "bfloat16":
                state[name] = bf16_round(fill).reshape(fill.shape)
            else:
                codes, state[name + "_absmax"] = q8_quantize(fill, name not in nonneg)
                state[name] = codes.reshape(fill.shape)
    full = {}
    for name, a in state.items():
        if name.endswith("_absmax") or np.ndim(a) == 0:
            continue
        if state_dtype == "bfloat16":
            full[name] = bf16_decode(a).reshape(param.shape)
        else:
            full[name] = q8_dequantize(a, state[name + "_absmax"], name not in nonneg).reshape(param.shape)
    work = dict(state)
    for k in list(work):
        if k.endswith("_absmax") or k in full:
            del work[k]
    work.update(full)
    step_rule(rule, param, grad, work, step=step, **hyperparameters)
    for name, a in work.items():
        if np.ndim(a) == 0:
            state[name] = a
        elif state_dtype == "bfloat16":
            if stochastic_rounding:
                state[name] = bf16_round_stochastic(a, seed, step, slots.index(name)).reshape(a.shape)
            else:
                state[name] = bf16_round(a).reshape(a.shape)
        else:
            codes, absmax = q8_quantize(a, name not in nonneg)
            state[name] = codes.reshape(a.shape)
            state[name + "_absmax"] = absmax


#: The stochastic-rounding stream of bfloat16 parameters (``sr_bits``' slot; state slots are 0..5).
PARAM_SR_SLOT = 7


def bf16_kahan(x: _Array, param: _Array, comp: _Array) -> tuple[_Array, _Array]:
    """New bfloat16 parameters with Kahan compensation (optimi's method), in float32.

    ``x`` holds the new float32 values, ``param`` the old bfloat16 bits and ``comp`` the compensation
    (bfloat16 bits).  The update ``x - old`` plus the compensation is added to the old value, rounded
    to nearest even; what that rounding lost is the new compensation.  Returns ``(param, comp)`` bits.

    Examples
    --------
    >>> import numpy as np
    >>> one = bf16_round(np.float32([1.0]))
    >>> p, c = bf16_kahan(np.float32([1.001]), one, np.zeros(1, np.uint16))   # below half an ulp of 1
    >>> bf16_decode(p), bf16_decode(c)
    (array([1.], dtype=float32), array([0.00099945], dtype=float32))
    """
    old = bf16_decode(param).reshape(np.shape(x))
    with np.errstate(all="ignore"):
        y = (np.asarray(x, dtype=np.float32) - old) + bf16_decode(comp).reshape(np.shape(x))
        new = bf16_round(old + y).reshape(np.shape(x))
        return new, bf16_round(y - (bf16_decode(new).reshape(np.shape(x)) - old)).reshape(np.shape(x))


def bf16_param_step(rule: str, param: _Array, grad: _Array, state: dict[str, Any], *, step: int,
                    kahan_comp: _Array | None = None, stochastic_rounding: bool = False, seed: int = 0,
                    state_dtype: str = "float32", grad_mul: float | None = None, nonneg: Sequence[str] = (),
                    slots: Sequence[str] = (), initial: dict[str, Any] | None = None, **hyperparameters: Any) -> None:
    """One step of ``rule`` on bfloat16 parameters, as the C engine takes it.

    ``param`` and ``grad`` are bfloat16 bits (``uint16``; ``param`` is updated in place).  Both are
    decoded to float32 (exact); the gradient is multiplied by ``grad_mul`` in float32 when given
    (clipping and loss scale: ``grad_multiplier``); the rule's float32 step runs with ``state`` in
    float32 (``state_dtype="float32"``) or low precision (``lowp_step``, whose arguments ``nonneg``,
    ``slots``, ``initial``, ``stochastic_rounding`` and ``seed`` this passes on); and the new values
    are written back: with Kahan compensation when ``kahan_comp`` (bits, updated in place) is given
    (``bf16_kahan``), else rounded stochastically from stream ``seed``, slot ``PARAM_SR_SLOT``, when
    ``stochastic_rounding``, else to nearest even.

    Examples
    --------
    >>> import numpy as np
    >>> p = bf16_round(np.float32([1.0, 2.0])); g = bf16_round(np.float32([1.0, -1.0]))
    >>> bf16_param_step("sgd", p, g, {}, step=1, lr=0.5)
    >>> bf16_decode(p)
    array([0.5, 2.5], dtype=float32)
    """
    bits = param.view(np.uint16) if isinstance(param, np.ndarray) else np.asarray(param, dtype=np.uint16)
    x = bf16_decode(bits).reshape(np.shape(param))
    g = bf16_decode(np.asarray(grad).view(np.uint16)).reshape(np.shape(param))
    if grad_mul is not None:
        with np.errstate(all="ignore"):
            g = g * np.float32(grad_mul)
    if state_dtype == "float32":
        step_rule(rule, x, g, state, step=step, **hyperparameters)
    else:
        lowp_step(rule, x, g, state, step=step, state_dtype=state_dtype, nonneg=nonneg, slots=slots,
                  stochastic_rounding=stochastic_rounding, seed=seed, initial=initial, **hyperparameters)
    if kahan_comp is not None:
        comp = kahan_comp.view(np.uint16)
        new, comp[...] = bf16_kahan(x, bits, comp)
    elif stochastic_rounding:
        new = bf16_round_stochastic(x, seed, step, PARAM_SR_SLOT)
    else:
        new = bf16_round(x).reshape(x.shape)
    bits[...] = new
