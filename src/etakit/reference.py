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
import math

import numpy as np

__all__ = ["step_rule", "sgd_step", "adam_step", "rmsprop_step", "adagrad_step", "lion_step", "muon_step",
           "zeropower_via_newtonschulz"]


def step_rule(rule, param, grad, state, *, step, **hyperparameters):
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


def _zeros(state, name, like, fill=0.0):
    if name not in state:
        state[name] = np.full_like(like, fill)
    return state[name]


def _grad(param, grad, weight_decay, maximize):
    """The gradient after maximize and L2 weight decay (a new array if changed)."""
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        g = g + float(weight_decay) * param
    return g


def sgd_step(param, grad, state, *, step, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False):
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


def adam_step(param, grad, state, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, maximize=False, decoupled_weight_decay=False):
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


def rmsprop_step(param, grad, state, *, step, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False):
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


def adagrad_step(param, grad, state, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False):
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


def lion_step(param, grad, state, *, step, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, weight_decouple=True,
              fixed_decay=False, maximize=False):
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


def _lerp(a, b, w):
    """``torch.lerp(a, b, w)`` as a new array: a + w (b - a) when |w| < 0.5, else b - (b - a)(1 - w)."""
    w = float(w)
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1.0 - w)


def zeropower_via_newtonschulz(G, ns_coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=1e-7, out=None):
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


def muon_step(param, grad, state, *, step, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
              ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):
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
