"""First-order stochastic-style minimisation with SciPy's conventions.

``etakit.minimize`` runs an etakit optimizer (Adam by default) on
``fun(x, *args)`` and returns a ``scipy.optimize.OptimizeResult``; the same
solver plugs into SciPy as ``scipy.optimize.minimize(..., method=etakit.scipy_method)``.
Useful where SciPy's quasi-Newton methods do not fit: noisy objectives
(minibatches drawn inside ``fun``), huge parameter vectors, or a learning-rate
schedule.
"""
from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import optim
from ._step import RuleSpec

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

__all__ = ["minimize", "scipy_method"]

_Vector = npt.NDArray[np.float64]

# x is a vector: rules for matrices only (Muon) do not apply
# (read through vars(): inside the package's import cycle mypy cannot infer the type of the
# unannotated optim.OPTIMIZERS)
_METHODS: dict[str, type[optim.Optimizer]] = {name.lower(): cls for name, cls in vars(optim)["OPTIMIZERS"].items()
                                              if not RuleSpec.of(cls).matrix_only}


def _optimize_result(**kw: Any) -> OptimizeResult:
    from scipy.optimize import OptimizeResult
    return OptimizeResult(**kw)


def _new_style(callback: Callable[..., object]) -> bool:
    try:
        return "intermediate_result" in inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return False


_FD_JAC = ("2-point", "3-point")


def _scalar(f: Any, what: str) -> float:
    """fun's value as a float: a scalar, or an array of one element (as SciPy accepts)."""
    try:
        a = np.asarray(f, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must return a real number, got {type(f).__name__} {f!r:.80}") from None
    if a.size != 1:
        raise ValueError(f"{what} must return a scalar, got an array of shape {a.shape}")
    return float(a.reshape(()))


def _gradient(g: Any, n: int, what: str) -> _Vector:
    """The gradient as a fresh 1-D float64 array of n elements, or a clear error."""
    if g is None:
        raise TypeError(f"{what} returned None; it must return the gradient, an array of {n} numbers "
                        "(one per element of x)")
    try:
        a = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must return the gradient, an array of {n} numbers; got "
                        f"{type(g).__name__} {g!r:.80}") from None
    if a.size != n or a.ndim > 1 and a.shape != (n, 1) and a.shape != (1, n):
        raise ValueError(f"{what} returned a gradient of shape {a.shape}; x has shape ({n},), so the gradient "
                         f"must have shape ({n},)")
    return np.array(a.ravel(), dtype=np.float64)


def _forward_differences(f: Callable[[_Vector], float], x: _Vector, f0: float) -> _Vector:
    """``scipy.optimize.approx_fprime``'s: (f(x + h e_i) - f(x)) / h, h = sqrt(eps), reusing f(x)."""
    h = np.sqrt(np.finfo(np.float64).eps)
    g = np.empty_like(x)
    for i in range(x.size):
        up = x.copy()
        up[i] += h
        g[i] = (f(up) - f0) / (up[i] - x[i])
    return g


def _central_differences(f: Callable[[_Vector], float], x: _Vector) -> _Vector:
    """SciPy's '3-point' scheme: (f(x + h e_i) - f(x - h e_i)) / 2h, h = eps**(1/3) * max(1, |x_i|)."""
    h = np.finfo(np.float64).eps ** (1 / 3) * np.maximum(1.0, np.abs(x))
    g = np.empty_like(x)
    for i in range(x.size):
        up, down = x.copy(), x.copy()
        up[i] += h[i]
        down[i] -= h[i]
        g[i] = (f(up) - f(down)) / (up[i] - down[i])
    return g


def minimize(fun: Callable[..., Any], x0: npt.ArrayLike, args: tuple[Any, ...] = (),
             jac: bool | str | Callable[..., Any] | None = None, method: str = "adam",
             lr: float | Callable[[int], float] | None = None, maxiter: int = 1000, gtol: float = 1e-6,
             callback: Callable[..., object] | None = None, **optimizer_kwargs: Any) -> OptimizeResult:
    """Minimise ``fun(x, *args)`` with an etakit optimizer; SciPy's result conventions.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float``, or ``-> (float, gradient)`` with ``jac=True``.
        ``x`` is a fresh copy at each call (as with SciPy), so ``fun`` may keep it.
    x0 : array_like
        Starting point: a scalar or a 1-D array (as for ``scipy.optimize.minimize``,
        which refuses more dimensions), converted to float64.
    args : tuple
        Extra arguments of ``fun`` and ``jac``.
    jac : bool, callable, {"2-point", "3-point"} or None
        ``True``: ``fun`` returns the gradient too.  A callable ``jac(x, *args)``.
        ``None`` or ``"2-point"``: forward differences (as ``scipy.optimize.approx_fprime``),
        n + 1 evaluations per iteration.  ``"3-point"``: central differences, 2n + 1
        evaluations, more accurate.  (SciPy's ``"cs"``, complex step, is not supported.)
    method : str
        An optimizer's name, in lower case (``etakit.OPTIMIZERS``: "adam",
        "sgd", "rmsprop", "prodigy", "dog", "schedulefreeadamw", ...; the
        matrix-only "muon" is not offered).
    lr : float, schedule or None
        Learning rate, or an ``etakit.schedules`` schedule / callable of the
        iteration.  None: the optimizer's own default (1e-3 for Adam; 1 for
        Prodigy, D-Adaptation and DoG, a multiplier of the step size they
        find; 0.0025 for ScheduleFreeAdamW and ScheduleFreeRAdam, 1 for
        ScheduleFreeSGD, which do need a learning rate).  The schedule-free
        methods return their averaged point (``x`` after ``eval()``), the
        point they are meant to be evaluated at, and ``gtol`` is tested there.
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
        99 stopped by the callback) and ``message``.  With status 2, ``x``,
        ``fun`` and ``jac`` are those of the last point where the objective and
        its gradient were finite.

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
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if isinstance(jac, str):
        if jac not in _FD_JAC:
            raise ValueError(f"jac={jac!r} is not supported; use True (fun returns the gradient too), a callable, "
                             f"None or '2-point' (forward differences) or '3-point' (central differences)")
    elif not (jac is None or isinstance(jac, bool) or callable(jac)):
        raise TypeError(f"jac must be True, a callable, '2-point', '3-point' or None, got {jac!r:.80}")
    if not isinstance(args, tuple):
        args = (args,)
    if np.iscomplexobj(x0):
        raise TypeError("x0 must be real; complex numbers are not supported")
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim > 1:
        raise ValueError(f"x0 must be a scalar or a 1-D array, got shape {x0.shape} (scipy.optimize.minimize "
                         "refuses it too); pass x0.ravel() and reshape inside fun")
    x = np.array(np.atleast_1d(x0), dtype=np.float64)
    n = x.size
    nfev = njev = 0

    def value(z: _Vector) -> float:
        nonlocal nfev
        nfev += 1
        return _scalar(fun(z.copy(), *args), "fun")

    def evaluate(xk: _Vector) -> tuple[float, _Vector]:
        # fun and jac get copies: the optimizer's array changes in place at each step
        nonlocal nfev, njev
        if jac is True:
            out = fun(xk.copy(), *args)
            nfev += 1
            njev += 1
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError(f"with jac=True, fun must return (value, gradient), got {type(out).__name__}")
            return _scalar(out[0], "fun"), _gradient(out[1], n, "fun (the gradient, with jac=True)")
        if callable(jac):
            f = _scalar(fun(xk.copy(), *args), "fun")
            g = jac(xk.copy(), *args)
            nfev += 1
            njev += 1
            return f, _gradient(g, n, "jac")
        f = value(xk)
        if jac == "3-point":
            return f, _central_differences(value, xk.copy())
        return f, _forward_differences(value, xk.copy(), f)    # None, False or "2-point"

    if lr is not None:
        optimizer_kwargs["lr"] = lr
    opt = _METHODS[name]([x], **optimizer_kwargs)
    averages = hasattr(opt, "eval")   # schedule-free: x (eval mode) is the average of the points y it steps at
    if averages:
        opt.train()     # schedule-free: steps in train mode (x holds the point the gradient is taken at)
    new_style = callback is not None and _new_style(callback)
    status, message = 1, "Maximum number of iterations has been exceeded."
    f, g = evaluate(x)
    best = (x.copy(), f, g)        # the last point where everything was finite
    nit = 0
    while True:
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            status, message = 2, "The objective or its gradient is not finite."
            break
        best = (x.copy(), f, g)
        if np.max(np.abs(g), initial=0.0) <= gtol:
            if averages:
                # schedule-free: the answer is the average x, not the point y the gradient was taken
                # at; converged only if x passes too (otherwise back to y, and on)
                opt.eval()
                fa, ga = evaluate(x)
                if math.isfinite(fa) and np.all(np.isfinite(ga)) and np.max(np.abs(ga), initial=0.0) <= gtol:
                    best = (x.copy(), fa, ga)
                    status, message = 0, "Optimization terminated successfully."
                    break
                opt.train()
            else:
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
                if math.isfinite(f) and np.all(np.isfinite(g)):
                    best = (x.copy(), f, g)
                break
    if status == 2 and nit == 0:
        best = (x.copy(), f, g)    # not even the start is finite: report it as it is
    elif status != 2 and status != 0 and averages and nit:
        opt.eval()                 # schedule-free: the averaged point is the answer
        fa, ga = evaluate(x)
        if math.isfinite(fa) and np.all(np.isfinite(ga)):
            best = (x.copy(), fa, ga)
            if status == 1 and np.max(np.abs(ga), initial=0.0) <= gtol:
                status, message = 0, "Optimization terminated successfully."
    x_out, f_out, g_out = best
    return _optimize_result(x=x_out, fun=f_out, jac=g_out, nit=nit, nfev=nfev, njev=njev, success=status == 0,
                            status=status, message=message)


def scipy_method(fun: Callable[..., Any], x0: npt.ArrayLike, args: tuple[Any, ...] = (),
                 jac: bool | str | Callable[..., Any] | None = None, hess: object = None, hessp: object = None,
                 bounds: object = None, constraints: Any = (), callback: Callable[..., object] | None = None,
                 **options: Any) -> OptimizeResult:
    """Run etakit's solver as a custom method of ``scipy.optimize.minimize``.

    SciPy calls it with the arguments it was given; bounds, constraints and
    Hessians are not supported.

    Parameters
    ----------
    fun : callable
        As for :func:`minimize`.
    x0 : array_like
        As for :func:`minimize`.
    args : tuple
        As for :func:`minimize`.
    jac : bool, callable, str or None
        As for :func:`minimize`.
    hess, hessp, bounds, constraints : None
        Must be None or empty (a ``ValueError`` otherwise).
    callback : callable, optional
        As for :func:`minimize`.
    **options
        :func:`minimize`'s keywords: ``optimizer`` (the method name, default
        "adam"), ``lr``, ``maxiter``, ``gtol`` (also set by SciPy's ``tol``)
        and optimizer arguments.

    Returns
    -------
    scipy.optimize.OptimizeResult
        As :func:`minimize` returns it.

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
