"""Pure-numpy reference implementations of etakit's update rules.

This module is the readable specification of every rule (PyTorch's
``torch.optim`` semantics), the oracle the tests compare the C kernels
against, and the numpy baseline of the benchmarks.  Each function updates
``param`` and the state arrays in place, one numpy operation at a time, in
the same order and precision as the C kernels: scalars are computed in
Python floats (double) once per step and applied in the arrays' dtype.

The functions do no validation; use the optimizer classes for that.

Examples
--------
>>> import numpy as np
>>> from etakit import reference
>>> p = np.ones(3, dtype=np.float32); g = np.full(3, 0.5, dtype=np.float32)
>>> m = np.zeros_like(p); v = np.zeros_like(p)
>>> reference.adam_step(p, g, m, v, step=1, lr=0.1)
>>> p     # one float32 step of lr along -sign(g)
array([0.90000004, 0.90000004, 0.90000004], dtype=float32)
"""
import math

import numpy as np

__all__ = ["sgd_step", "adam_step", "rmsprop_step", "adagrad_step"]


def _grad(param, grad, weight_decay, maximize):
    """The gradient after maximize and L2 weight decay (a new array if changed)."""
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        g = g + float(weight_decay) * param
    return g


def sgd_step(param, grad, momentum_buffer=None, *, lr=1e-3, momentum=0.0, dampening=0.0,
             weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """One SGD step (PyTorch ``torch.optim.SGD``), in place.

    ``momentum_buffer`` is needed when ``momentum != 0``; on the first step
    (``first_step=True``) it becomes a copy of the gradient.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([1.0, 2.0]); g = np.array([0.5, -0.5])
    >>> sgd_step(p, g, lr=0.1)
    >>> p
    array([0.95, 2.05])
    """
    lr, momentum, dampening = float(lr), float(momentum), float(dampening)
    g = _grad(param, grad, weight_decay, maximize)
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1.0 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * g


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3,
              betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False):
    """One Adam step (``decoupled_weight_decay=True``: AdamW), in place.

    ``step`` is the 1-based number of this step (PyTorch increments its step
    count before the update).  ``max_exp_avg_sq`` is needed when ``amsgrad``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -2.0])
    >>> m, v = np.zeros(2), np.zeros(2)
    >>> adam_step(p, g, m, v, step=1, lr=0.01)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, eps = float(lr), float(eps)
    beta1, beta2 = float(betas[0]), float(betas[1])
    weight_decay = float(weight_decay)
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
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    bias_correction1 = 1.0 - beta1 ** int(step)
    bias_correction2 = 1.0 - beta2 ** int(step)
    step_size = lr / bias_correction1
    denom = np.sqrt(v)
    denom /= math.sqrt(bias_correction2)
    denom += eps
    np.multiply(exp_avg, -step_size, out=tmp)
    tmp /= denom
    param += tmp


def rmsprop_step(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, lr=1e-2,
                 alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False):
    """One RMSprop step (PyTorch ``torch.optim.RMSprop``), in place.

    ``momentum_buffer`` is needed when ``momentum > 0``, ``grad_avg`` when
    ``centered``; both start at zero.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([1.0, -1.0]); s = np.zeros(2)
    >>> rmsprop_step(p, g, s, lr=0.01, alpha=0.0)
    >>> np.round(p, 6)
    array([-0.01,  0.01])
    """
    lr, alpha, eps, momentum = float(lr), float(alpha), float(eps), float(momentum)
    g = _grad(param, grad, weight_decay, maximize)
    square_avg *= alpha
    tmp = np.empty_like(param)
    np.multiply(g, 1.0 - alpha, out=tmp)
    tmp *= g
    square_avg += tmp
    if centered:
        np.subtract(g, grad_avg, out=tmp)
        tmp *= 1.0 - alpha
        grad_avg += tmp
        avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        momentum_buffer *= momentum
        np.divide(g, avg, out=tmp)
        momentum_buffer += tmp
        param += -lr * momentum_buffer
    else:
        np.multiply(g, -lr, out=tmp)
        tmp /= avg
        param += tmp


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 eps=1e-10, maximize=False):
    """One Adagrad step (PyTorch ``torch.optim.Adagrad``), in place.

    ``state_sum`` starts at ``initial_accumulator_value``; ``step`` is the
    1-based number of this step.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2); g = np.array([2.0, -2.0]); s = np.zeros(2)
    >>> adagrad_step(p, g, s, step=1, lr=0.1)
    >>> np.round(p, 6)
    array([-0.1,  0.1])
    """
    lr, lr_decay, eps = float(lr), float(lr_decay), float(eps)
    g = _grad(param, grad, weight_decay, maximize)
    clr = lr / (1.0 + (int(step) - 1) * lr_decay)
    tmp = np.empty_like(param)
    np.multiply(g, g, out=tmp)
    state_sum += tmp
    std = np.sqrt(state_sum)
    std += eps
    np.multiply(g, -clr, out=tmp)
    tmp /= std
    param += tmp
