"""etakit.minimize and etakit.scipy_method: convergence and SciPy's result conventions."""
import numpy as np
import pytest

import etakit
from etakit import schedules as S

scipy_optimize = pytest.importorskip("scipy.optimize")
rosen, rosen_der = scipy_optimize.rosen, scipy_optimize.rosen_der

FIELDS = {"x", "fun", "jac", "nit", "nfev", "njev", "success", "status", "message"}


def rosen_with_grad(x):
    return rosen(x), rosen_der(x)


def logistic_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    w = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    y = (X @ w + 0.3 * rng.standard_normal(300) > 0).astype(float)

    def fun(w, X, y, lam):
        z = X @ w
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * lam * w @ w
        grad = X.T @ (1 / (1 + np.exp(-z)) - y) / len(y) + lam * w
        return loss, grad
    return fun, (X, y, 1e-2)


def test_rosenbrock_converges_with_scipy_conventions():
    res = etakit.minimize(rosen_with_grad, [-1.2, 1.0], jac=True, method="adam", lr=S.cosine(0.02, 20000, 1e-4),
                          maxiter=20000, gtol=1e-5)
    assert FIELDS <= set(res)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=2e-3)
    assert res.fun < 1e-6 and res.nit <= 20000 and res.nfev == res.njev == res.nit + 1


def test_logistic_regression_matches_lbfgs_through_both_entry_points():
    fun, args = logistic_problem()
    ref = scipy_optimize.minimize(fun, np.zeros(5), args=args, jac=True, method="L-BFGS-B", tol=1e-12)
    ours = etakit.minimize(fun, np.zeros(5), args=args, jac=True, lr=0.05, maxiter=5000, gtol=1e-7)
    via = scipy_optimize.minimize(fun, np.zeros(5), args=args, jac=True, method=etakit.scipy_method,
                                  options={"lr": 0.05, "maxiter": 5000, "gtol": 1e-7})
    for res in (ours, via):
        assert res.success and res.status == 0 and res.message == "Optimization terminated successfully."
        np.testing.assert_allclose(res.x, ref.x, atol=1e-5)
        assert abs(res.fun - ref.fun) < 1e-9
        assert np.abs(res.jac).max() <= 1e-7


def test_iteration_limit_and_other_optimizers():
    res = etakit.minimize(rosen, np.zeros(3), jac=rosen_der, method="SGD", lr=1e-3, maxiter=50, momentum=0.9)
    assert not res.success and res.status == 1 and res.nit == 50 and "iterations" in res.message
    res = scipy_optimize.minimize(rosen, np.zeros(3), method=etakit.scipy_method,
                                  options={"optimizer": "rmsprop", "lr": 1e-3, "maxiter": 10})
    assert res.nit == 10 and res.nfev == 11 * 4   # forward differences: n + 1 calls per evaluation


def test_callback_both_styles_and_stop_iteration():
    seen = []
    etakit.minimize(rosen_with_grad, [0.0, 0.0], jac=True, maxiter=5, callback=lambda xk: seen.append(xk))
    assert len(seen) == 5 and all(s.shape == (2,) for s in seen)

    def cb(intermediate_result):
        seen.append(intermediate_result.fun)
        if len(seen) >= 8:
            raise StopIteration
    res = etakit.minimize(rosen_with_grad, [0.0, 0.0], jac=True, maxiter=100, callback=cb)
    assert res.status == 99 and not res.success and res.nit == 3


def test_non_finite_objective_stops():
    res = etakit.minimize(lambda x: (np.nan, np.zeros_like(x)), [1.0], jac=True)
    assert res.status == 2 and not res.success


@pytest.mark.parametrize("kw,exc,match", [
    (dict(method="lbfgs"), ValueError, "method must be one of"),
    (dict(maxiter=-1), ValueError, "maxiter"),
    (dict(gtol=-1.0), ValueError, "gtol"),
    (dict(lr=-1.0), ValueError, "Invalid lr"),
])
def test_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        etakit.minimize(rosen_with_grad, [0.0, 0.0], jac=True, **kw)


def test_scipy_method_refuses_bounds():
    with pytest.raises(ValueError, match="bounds"):
        scipy_optimize.minimize(rosen, [0.0, 0.0], method=etakit.scipy_method, bounds=[(0, 1), (0, 1)])


@pytest.mark.parametrize("method", ["dog", "prodigy", "dadaptadam", "dadaptsgd"])
def test_learning_rate_free_methods_need_no_lr(method):
    # lr=None leaves the optimizer's own default (a multiplier of 1 for these), not Adam's 1e-3
    fun, args = logistic_problem()
    ref = scipy_optimize.minimize(fun, np.zeros(5), args=args, jac=True, method="L-BFGS-B", tol=1e-12)
    res = etakit.minimize(fun, np.zeros(5), args=args, jac=True, method=method, maxiter=3000)
    assert res.fun - ref.fun < 1e-4 * ref.fun


def test_schedule_free_returns_the_averaged_point():
    fun, args = logistic_problem()
    seen = []
    res = etakit.minimize(fun, np.zeros(5), args=args, jac=True, method="schedulefreesgd", lr=0.5, maxiter=300,
                          callback=lambda xk: seen.append(xk))
    assert res.status == 1 and res.nit == 300
    # the last iterate seen is y, where the gradients are taken; the answer is x, the average, a step further
    assert not np.array_equal(res.x, seen[-1])
    assert res.fun == pytest.approx(fun(res.x, *args)[0], rel=0, abs=0)
    assert res.nfev == 302     # one more evaluation, at the average


@pytest.mark.parametrize("method,lr", [("schedulefreesgd", 0.01), ("schedulefreeadamw", 0.05)])
def test_schedule_free_success_means_gtol_holds_at_the_returned_point(method, lr):
    A = np.diag([1.0, 10.0, 100.0])
    for gtol in (1e-3, 1e-6):
        res = etakit.minimize(lambda x: 0.5 * x @ A @ x, np.ones(3), jac=lambda x: A @ x, method=method, lr=lr,
                              maxiter=5000, gtol=gtol)
        np.testing.assert_array_equal(res.jac, A @ res.x)
        assert res.success == (np.abs(res.jac).max() <= gtol)
        if gtol == 1e-3:
            assert res.success
