"""Thread counts, SIMD variants, state-dict round trips, parameter groups."""
import pickle

import numpy as np
import pytest

import etakit
from etakit import reference
from conftest import make_grads, make_params, ready, run_trajectory
from rule_cases import ONE_GROUP_KEY, RICHEST

KINDS = RICHEST




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,hp", KINDS)
def test_one_and_two_threads_are_bit_identical(kind, hp, dtype, threads):
    etakit.set_num_threads(1)
    one, _ = run_trajectory(kind, hp, dtype, 7)
    etakit.set_num_threads(2)
    two, _ = run_trajectory(kind, hp, dtype, 7)
    etakit.set_num_threads(3)   # more threads than cores, uneven split
    three, _ = run_trajectory(kind, hp, dtype, 7)
    for a, b, c in zip(one, two, three):
        assert a.tobytes() == b.tobytes() == c.tobytes()


@pytest.mark.parametrize("kind,hp", KINDS)
def test_every_simd_variant_is_bit_identical(kind, hp, simd):
    results = []
    for variant in etakit._core.simd_available():
        simd(variant)
        assert etakit.simd_variant() == variant
        results.append(run_trajectory(kind, hp, np.float32, 3)[0])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def test_unknown_simd_variant_is_refused():
    with pytest.raises(ValueError, match="not available"):
        etakit._core.set_simd_variant("sse9")


def test_set_num_threads_validates_and_applies(threads):
    etakit.set_num_threads(1)
    assert etakit.get_num_threads() == 1
    with pytest.raises(ValueError, match=">= 1"):
        etakit.set_num_threads(0)
    with pytest.raises(TypeError, match="int"):
        etakit.set_num_threads(2.0)


def test_threadpoolctl_sees_and_limits_the_pool(threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not etakit._core.has_openmp():
        pytest.skip("built without OpenMP")
    etakit.set_num_threads(2)
    info = threadpoolctl.threadpool_info()
    assert any(i["user_api"] == "openmp" for i in info)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert etakit.get_num_threads() == 1
    assert etakit.get_num_threads() == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,hp", KINDS)
def test_state_dict_round_trip_continues_bit_identically(kind, hp, dtype):
    rng = np.random.default_rng(5)
    params = make_params(rng, dtype, kind=kind)
    key, value = ONE_GROUP_KEY.get(kind, ("lr", 1e-3))
    opt = ready(getattr(etakit, kind)([{"params": params[:2], key: value}, {"params": params[2:]}], **hp))
    for _ in range(20):
        opt.step(make_grads(rng, params))
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    saved_params = [p.copy() for p in params]
    grads = [make_grads(rng, params) for _ in range(20)]
    for g in grads:
        opt.step(g)

    resumed = [p.copy() for p in saved_params]
    opt2 = getattr(etakit, kind)([{"params": resumed[:2]}, {"params": resumed[2:]}])
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0][key] == value
    for g in grads:
        opt2.step(g)
    for a, b in zip(params, resumed):
        assert a.tobytes() == b.tobytes()
    assert opt2.state_dict()["state"][0]["step"] == 40


def test_state_dict_is_a_snapshot_and_plain_data():
    w = np.zeros(5)
    opt = etakit.Adam([w], lr=0.1)
    assert opt.state_dict()["state"] == {}
    opt.step([np.ones(5)])
    sd = opt.state_dict()
    m = sd["state"][0]["exp_avg"].copy()
    opt.step([np.ones(5)])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], m)  # later steps do not leak in
    assert sd["param_groups"][0]["params"] == [0]
    for v in sd["state"][0].values():
        assert isinstance(v, (int, np.ndarray))
    # storable with numpy's own format, each array by name
    flat = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    np.savez(__import__("io").BytesIO(), **flat)


def test_sgd_momentum_buffer_starts_from_first_gradient():
    w = np.zeros(3)
    opt = etakit.SGD([w], lr=1.0, momentum=0.9, dampening=0.5)
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["momentum_buffer"], np.ones(3))
    np.testing.assert_array_equal(w, -np.ones(3))
    opt.step([np.ones(3)])   # 0.9 * 1 + 0.5 * 1
    np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"], 1.4)


def test_add_param_group_steps_new_parameters_from_zero(rng):
    a, b = np.zeros(4), np.zeros(2)
    opt = etakit.Adam([a], lr=0.1)
    opt.step([np.ones(4)])
    opt.add_param_group({"params": [b], "lr": 0.2})
    opt.step([np.ones(4), np.ones(2)])
    st = opt.state_dict()["state"]
    assert st[0]["step"] == 2 and st[1]["step"] == 1
    np.testing.assert_allclose(b, -0.2)   # a first Adam step moves by lr
    with pytest.raises(ValueError, match="same array"):
        opt.add_param_group({"params": [a]})
    assert len(opt.param_groups) == 2


def test_repr_lists_groups():
    opt = etakit.RMSprop([np.zeros(1)], lr=0.5)
    r = repr(opt)
    assert r.startswith("RMSprop (") and "Parameter Group 0" in r and "lr: 0.5" in r


def test_optimizers_step_concurrently_from_python_threads(threads):
    """The step releases the GIL; two optimizers stepped from two Python
    threads at once give exactly the sequential results."""
    from concurrent.futures import ThreadPoolExecutor

    def run(seed):
        params, _ = run_trajectory("Adam", dict(lr=1e-2), np.float32, seed, steps=20)
        return [p.tobytes() for p in params]

    sequential = [run(1), run(2)]
    with ThreadPoolExecutor(2) as pool:
        concurrent = list(pool.map(run, [1, 2]))
    assert concurrent == sequential


@pytest.fixture
def flush():
    yield etakit.set_flush_denormal
    etakit.set_flush_denormal(False)


def test_flush_denormal_zeroes_only_denormals(flush, rng):
    if not flush(True):
        pytest.skip("no flush-to-zero on this CPU")
    tiny = np.full(40000, 1e-20, dtype=np.float32)          # squares to a float32 denormal
    normal = rng.standard_normal(40000).astype(np.float32)
    for g, expect_zero in ((tiny, True), (normal, False)):
        for on in (True, False):
            flush(on)
            p = np.ones(40000, dtype=np.float32)
            opt = etakit.Adam([p], lr=1e-3)
            opt.step([g])
            v = opt.state_dict()["state"][0]["exp_avg_sq"]
            ref = {}
            reference.adam_step(np.ones_like(p), g, ref, step=1, lr=1e-3)
            ref_v = ref["exp_avg_sq"]
            if on and expect_zero:
                assert not v.any() and ref_v.all()      # flushed, where the reference keeps denormals
            else:
                assert v.tobytes() == ref_v.tobytes()
