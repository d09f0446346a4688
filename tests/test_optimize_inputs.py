"""etakit.minimize's inputs and outputs where they used to surprise: the array fun receives,
SciPy's jac spellings, x0's shape, the point returned on a non-finite objective, and bad gradients."""
import numpy as np
import pytest

import etakit

scipy_optimize = pytest.importorskip("scipy.optimize")


def quad(x):
    return float(((x - 3.0) ** 2).sum())


def quad_grad(x):
    return 2 * (x - 3.0)


def test_fun_and_jac_get_copies_they_may_keep():
    seen_f, seen_g = [], []

    def fun(x):
        seen_f.append(x)
        return quad(x)

    def jac(x):
        seen_g.append(x)
        return quad_grad(x)

    res = etakit.minimize(fun, np.zeros(2), jac=jac, lr=0.1, maxiter=5)
    assert res.nit == 5 and len(seen_f) == 6
    # each stored x is the point of its own evaluation, not the optimizer's live array
    assert len({a.tobytes() for a in seen_f}) == 6 and len({a.tobytes() for a in seen_g}) == 6
    assert all(a is not res.x for a in seen_f)
    np.testing.assert_array_equal(seen_f[0], [0.0, 0.0])
    np.testing.assert_array_equal(seen_f[-1], res.x)


def test_fun_gets_copies_with_jac_true_and_finite_differences():
    for jac in (True, None, "2-point", "3-point"):
        seen = []

        def fun(x):   # called in this iteration only
            seen.append(x)  # noqa: B023
            return (quad(x), quad_grad(x)) if jac is True else quad(x)  # noqa: B023
        etakit.minimize(fun, np.zeros(2), jac=jac, lr=0.1, maxiter=3)
        assert len({a.tobytes() for a in seen}) > 3, jac
        np.testing.assert_array_equal(seen[0], [0.0, 0.0])


@pytest.mark.parametrize("jac,nfev_per_eval", [(None, 3), ("2-point", 3), ("3-point", 5)])
def test_finite_difference_schemes(jac, nfev_per_eval):
    res = etakit.minimize(quad, np.zeros(2), jac=jac, lr=0.1, maxiter=3000, gtol=1e-5)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [3.0, 3.0], atol=1e-4)
    assert res.nfev == nfev_per_eval * (res.nit + 1) and res.njev == 0
    # and through SciPy's front door, with SciPy's spelling
    via = scipy_optimize.minimize(quad, np.zeros(2), jac=jac, method=etakit.scipy_method,
                                  options={"lr": 0.1, "maxiter": 3000, "gtol": 1e-5})
    np.testing.assert_allclose(via.x, res.x)


def test_central_differences_are_more_accurate():
    x = np.array([0.3, -1.2, 2.0])
    exact = scipy_optimize.rosen_der(x)
    res2 = etakit.minimize(scipy_optimize.rosen, x, jac="2-point", maxiter=0)
    res3 = etakit.minimize(scipy_optimize.rosen, x, jac="3-point", maxiter=0)
    np.testing.assert_array_equal(res2.jac, scipy_optimize.approx_fprime(x, scipy_optimize.rosen))
    assert np.abs(res3.jac - exact).max() < 1e-2 * np.abs(res2.jac - exact).max()


@pytest.mark.parametrize("jac,exc,match", [
    ("cs", ValueError, r"jac='cs' is not supported; use True .* '2-point' .* '3-point'"),
    ("2point", ValueError, "is not supported"),
    (1.5, TypeError, "jac must be True, a callable, '2-point', '3-point' or None"),
])
def test_unsupported_jac_is_named(jac, exc, match):
    with pytest.raises(exc, match=match):
        etakit.minimize(quad, np.zeros(2), jac=jac)


def test_x0_dimensions_follow_scipy():
    # SciPy 1.17 raises "'x0' must only have one dimension." for 2-D x0; so do we (no silent flattening)
    with pytest.raises(ValueError, match=r"x0 must be a scalar or a 1-D array, got shape \(2, 2\)"):
        etakit.minimize(quad, np.zeros((2, 2)), jac=quad_grad)
    with pytest.raises(ValueError):
        scipy_optimize.minimize(quad, np.zeros((2, 2)))
    res = etakit.minimize(quad, 0.0, jac=quad_grad, lr=0.1, maxiter=2000)    # scalars become 1-D, as in SciPy
    assert res.x.shape == (1,) and abs(res.x[0] - 3.0) < 1e-4
    with pytest.raises(TypeError, match="x0 must be real"):
        etakit.minimize(quad, np.zeros(2) + 1j, jac=quad_grad)


def test_non_finite_objective_returns_the_last_finite_point():
    def fun(x):                      # finite up to 2, NaN beyond; SGD from 0 towards 3 crosses 2 at step 5
        return (quad(x), quad_grad(x)) if x[0] <= 2 else (np.nan, np.full_like(x, np.nan))

    res = etakit.minimize(fun, [0.0], jac=True, method="sgd", lr=0.1, maxiter=100)
    assert res.status == 2 and not res.success and res.nit == 5
    assert 1.7 < res.x[0] <= 2.0 and res.fun == quad(res.x) and res.jac.tolist() == quad_grad(res.x).tolist()
    # not even the start is finite: that is what is reported
    res = etakit.minimize(lambda x: (np.inf, np.zeros_like(x)), [1.0], jac=True)
    assert res.status == 2 and res.fun == np.inf and res.x.tolist() == [1.0]


def test_non_finite_gradient_returns_the_last_finite_point():
    calls = []

    def fun(x):
        calls.append(x)
        g = quad_grad(x) if len(calls) < 4 else np.array([np.inf, 0.0])
        return quad(x), g
    res = etakit.minimize(fun, np.zeros(2), jac=True, lr=0.1, maxiter=100)
    assert res.status == 2 and res.nit == 3
    np.testing.assert_array_equal(res.x, calls[2])
    assert res.fun == quad(calls[2])


@pytest.mark.parametrize("jac,exc,match", [
    (lambda x: None, TypeError, r"jac returned None; it must return the gradient, an array of 2 numbers"),
    (lambda x: np.zeros(3), ValueError, r"jac returned a gradient of shape \(3,\); x has shape \(2,\)"),
    (lambda x: np.zeros((2, 2)), ValueError, r"jac returned a gradient of shape \(2, 2\)"),
    (lambda x: "grad", TypeError, "jac must return the gradient, an array of 2 numbers; got str"),
])
def test_bad_gradients_are_explained(jac, exc, match):
    with pytest.raises(exc, match=match):
        etakit.minimize(quad, np.zeros(2), jac=jac)


@pytest.mark.parametrize("fun,exc,match", [
    (lambda x: quad(x), TypeError, r"with jac=True, fun must return \(value, gradient\), got float"),
    (lambda x: (quad(x), None), TypeError, r"fun \(the gradient, with jac=True\) returned None"),
    (lambda x: (x, quad_grad(x)), ValueError, r"fun must return a scalar, got an array of shape \(2,\)"),
    (lambda x: ("a", quad_grad(x)), TypeError, "fun must return a real number, got str"),
])
def test_bad_fun_results_with_jac_true_are_explained(fun, exc, match):
    with pytest.raises(exc, match=match):
        etakit.minimize(fun, np.zeros(2), jac=True)


def test_column_gradient_is_accepted():
    res = etakit.minimize(quad, np.zeros(2), jac=lambda x: quad_grad(x)[:, None], lr=0.1, maxiter=2000)
    assert res.success
