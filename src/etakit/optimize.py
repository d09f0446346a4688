"""First-order stochastic-style minimisation with SciPy's conventions.

``etakit.minimize`` runs an etakit optimizer (Adam by default) on
``fun(x, *args)`` and returns a ``scipy.optimize.OptimizeResult``; the same
solver plugs into SciPy as ``scipy.optimize.minimize(..., method=etakit.scipy_method)``.
Useful where SciPy's quasi-Newton methods do not fit: noisy objectives
(minibatches drawn inside ``fun``), huge parameter vectors, or a learning-rate
schedule.
"""
import inspect
import math
import numbers

import numpy as np

from . import optim

__all__ = ["minimize", "scipy_method"]

_METHODS = {name.lower(): cls for name, cls in optim.OPTIMIZERS.items()}


def _optimize_result(**kw):
    from scipy.optimize import OptimizeResult
    return OptimizeResult(**kw)


def _new_style(callback):
    try:
        return "intermediate_result" in inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return False


def minimize(fun, x0, args=(), jac=None, method="adam", lr=1e-3, maxiter=1000, gtol=1e-6, callback=None,
             **optimizer_kwargs):
    """Minimise ``fun(x, *args)`` with an etakit optimizer; SciPy's result conventions.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float``, or ``-> (float, gradient)`` with ``jac=True``.
    x0 : array_like
        Starting point (flattened to 1-D float64, as SciPy does).
    args : tuple
        Extra arguments of ``fun`` and ``jac``.
    jac : bool, callable or None
        ``True``: ``fun`` returns the gradient too.  A callable ``jac(x, *args)``.
        ``None``: forward differences (``scipy.optimize.approx_fprime``), n + 1
        evaluations per iteration.
    method : {"adam", "adamw", "sgd", "rmsprop", "adagrad"}
    lr : float or schedule
        Learning rate, or an ``etakit.schedules`` schedule / callable of the iteration.
    maxiter : int
        Iterations (optimizer steps) at most.
    gtol : float
        Stop when the largest absolute gradient component is <= gtol.
    callback : callable
        ``callback(intermediate_result)`` (SciPy's new style, a result with ``x``
        and ``fun``) or ``callback(xk)``; raising ``StopIteration`` stops.
    **optimizer_kwargs
        Passed to the optimizer (``betas``, ``momentum``, ``weight_decay`` ...).

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``success``,
        ``status`` (0 converged, 1 iteration limit, 2 non-finite value,
        99 stopped by the callback) and ``message``.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> res = etakit.minimize(lambda x: ((x - 3.0) ** 2).sum(), np.zeros(2), jac=lambda x: 2 * (x - 3.0),
    ...                       lr=0.1, maxiter=2000)
    >>> res.success, np.round(res.x, 4)
    (True, array([3., 3.]))
    """
    name = method.lower() if isinstance(method, str) else method
    if name not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 0:
        raise ValueError(f"maxiter must be an integer >= 0, got {maxiter!r}")
    if isinstance(gtol, bool) or not isinstance(gtol, numbers.Real) or not gtol >= 0:
        raise ValueError(f"gtol must be a number >= 0, got {gtol!r}")
    if not isinstance(args, tuple):
        args = (args,)
    x = np.array(np.atleast_1d(np.asarray(x0, dtype=np.float64)).ravel(), dtype=np.float64)
    nfev = njev = 0

    def evaluate(xk):
        nonlocal nfev, njev
        if jac is True:
            f, g = fun(xk, *args)
            nfev += 1
            njev += 1
        elif callable(jac):
            f = fun(xk, *args)
            g = jac(xk, *args)
            nfev += 1
            njev += 1
        elif jac is None or jac is False:
            from scipy.optimize import approx_fprime
            f = fun(xk, *args)
            g = approx_fprime(xk, lambda z: float(fun(z, *args)))
            nfev += 1 + xk.size
        else:
            raise TypeError(f"jac must be True, a callable or None, got {jac!r}")
        g = np.array(np.asarray(g, dtype=np.float64).ravel(), dtype=np.float64)
        if g.shape != xk.shape:
            raise ValueError(f"the gradient has {g.size} elements, x has {xk.size}")
        return float(f), g

    opt = _METHODS[name]([x], lr=lr, **optimizer_kwargs)
    new_style = callback is not None and _new_style(callback)
    status, message = 1, "Maximum number of iterations has been exceeded."
    f, g = evaluate(x)
    nit = 0
    while True:
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            status, message = 2, "The objective or its gradient is not finite."
            break
        if np.max(np.abs(g), initial=0.0) <= gtol:
            status, message = 0, "Optimization terminated successfully."
            break
        if nit >= maxiter:
            break
        opt.step([g])
        nit += 1
        f, g = evaluate(x)
        if callback is not None:
            try:
                if new_style:
                    callback(intermediate_result=_optimize_result(x=x.copy(), fun=f))
                else:
                    callback(x.copy())
            except StopIteration:
                status, message = 99, "`callback` raised `StopIteration`."
                break
    return _optimize_result(x=x, fun=f, jac=g, nit=nit, nfev=nfev, njev=njev, success=status == 0,
                            status=status, message=message)


def scipy_method(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None, constraints=(), callback=None,
                 **options):
    """etakit's solver as a custom method of ``scipy.optimize.minimize``.

    ``options`` are :func:`minimize`'s keywords: ``optimizer`` (the method
    name, default "adam"), ``lr``, ``maxiter``, ``gtol`` (also set by SciPy's
    ``tol``) and optimizer arguments.  Bounds, constraints and Hessians are
    not supported.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> from scipy.optimize import minimize
    >>> res = minimize(lambda x: (((x - 1) ** 2).sum(), 2 * (x - 1)), np.zeros(3), jac=True,
    ...                method=etakit.scipy_method, options={"lr": 0.1, "maxiter": 3000})
    >>> res.success, np.round(res.x, 4)
    (True, array([1., 1., 1.]))
    """
    if bounds is not None or (constraints is not None and len(constraints)):
        raise ValueError("etakit.scipy_method does not support bounds or constraints")
    if hess is not None or hessp is not None:
        raise ValueError("etakit.scipy_method is first-order: it takes no Hessian")
    options = dict(options)
    if "tol" in options:
        options.setdefault("gtol", options.pop("tol"))
    method = options.pop("optimizer", "adam")
    return minimize(fun, x0, args=args, jac=jac, method=method, callback=callback, **options)
