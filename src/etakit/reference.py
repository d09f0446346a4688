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

__all__ = ["step_rule", "sgd_step", "adam_step", "rmsprop_step", "adagrad_step", "lion_step", "BLOCK", "LANES",
           "blocked_sum", "adafactor_step"]

#: How the kernels form a sum over a tensor (a norm, a dot product): over
#: blocks of BLOCK elements from the tensor's start, each summed in LANES
#: lanes (element i of a block goes to lane i % LANES, in order, in double),
#: the lanes added in order, then the blocks in order.  ``blocked_sum`` is
#: that order in numpy.
BLOCK = 4096
LANES = 16


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


def _lane_sums(x):
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


def blocked_sum(x):
    """The sum of the elements of ``x`` (any shape, taken flat, in float64) in the kernels' order.

    Blocks of BLOCK elements from the start, each summed in LANES lanes
    (:data:`BLOCK`); the block sums added in order from 0.0.  Rules that
    reduce (norms, dot products) use this for bit-identical results.

    Examples
    --------
    >>> import numpy as np
    >>> blocked_sum(np.arange(10000.0) ** 2) == float(np.sum(np.arange(10000.0) ** 2))
    True
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    nblocks = -(-x.size // BLOCK)
    padded = np.zeros(nblocks * BLOCK)
    padded[:x.size] = x
    total = 0.0
    for s in _lane_sums(padded.reshape(nblocks, BLOCK)).tolist():
        total += s
    return total


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


# Adafactor's tiles (csrc/rules/adafactor.h): at most AF_WIDTH columns by as
# many rows as make AF_TILE elements.  Row sums are formed per tile stripe of
# columns (in LANES lanes), column sums per tile group of rows (row after
# row); the partial sums are then added stripe after stripe, group after group.
AF_TILE = 65536
AF_WIDTH = 256


def _adafactor_sums(sq):
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


def adafactor_step(param, grad, state, *, step, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                   weight_decay=0.0, maximize=False):
    """One Adafactor step (``torch.optim.Adafactor``), in place.

    State: ``row_var`` (shape (..., R, 1)) and ``col_var`` (shape (..., 1, C))
    for a parameter of two or more dimensions, ``variance`` (its shape) for
    the others; all start at zero.  Row and column statistics are computed in
    double from the kernel's sums and stored in the parameter's dtype; the
    element-wise work is in the parameter's dtype; sums of squares follow
    :func:`blocked_sum`.

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

        def lerp(a, b):
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
    pp, uu = blocked_sum(p64 * p64), blocked_sum(u64 * u64)
    rho = min(lr, 1.0 / math.sqrt(t))
    alpha = max(eps2, math.sqrt(pp) / math.sqrt(n)) * rho
    denom = max(1.0, math.sqrt(uu) / (math.sqrt(n) * d))
    if weight_decay != 0:
        param *= T(1.0 - lr * weight_decay)
    param += T(-alpha / denom) * u
