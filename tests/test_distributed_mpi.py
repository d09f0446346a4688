"""etakit.distributed.ShardedOptimizer: ZeRO-1 over MPI, against one process on the averaged gradients.

``mpiexec -n 2`` runs tests/mpi_sharded_worker.py once for every case of tests/sharded_cases.py
(real processes over MPICH's shared memory, as mpi4py's own tests run); the trajectories, the
consolidated state and the clipping / non-finite decisions must be bit-identical to a single etakit
optimizer stepped on the mean of the two ranks' gradients.  The rest (argument checks, the
partition, refused rules) runs in this process on MPI.COMM_SELF.
"""
import math
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI", reason="etakit.distributed needs the 'mpi' extra: pip install 'etakit[mpi]'")

import etakit  # noqa: E402
from etakit import distributed  # noqa: E402
from etakit.distributed import ShardedOptimizer, partition  # noqa: E402
from etakit.reference import BLOCK  # noqa: E402
from sharded_cases import CASES, STEPS, grads, make_params, mean  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


@pytest.fixture(scope="module")
def mpi_results(tmp_path_factory):
    if MPIEXEC is None:
        pytest.skip("no mpiexec (pip install 'etakit[mpi]' installs MPICH's)")
    out = tmp_path_factory.mktemp("mpi") / "results.pkl"
    src = os.path.dirname(os.path.dirname(etakit.__file__))     # the etakit this test imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, HERE, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, os.path.join(HERE, "mpi_sharded_worker.py"), str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out, "rb") as f:
        return pickle.load(f)


def single_process(name):
    """One etakit optimizer on the mean gradients, with etakit.clip_grad_norm_ and the skip/raise policy."""
    kind, hp, _, _, opts, _ = CASES[name]
    params = make_params(name)
    opt = getattr(etakit, kind)(params, **hp)
    if hasattr(opt, "train"):
        opt.train()
    traj, refused, norm = [], [], None
    p = opts.get("norm_type", 2.0)
    for k in range(STEPS):
        g = mean([grads(name, k, r, params) for r in range(2)])
        refuse = False
        if "global_clipnorm" in opts or opts.get("nonfinite", "ignore") != "ignore":
            norm = etakit.grad_norm(g, p)
            refuse = not math.isfinite(norm) and opts.get("nonfinite", "ignore") != "ignore"
        if not refuse:
            if "global_clipnorm" in opts:
                etakit.clip_grad_norm_(g, opts["global_clipnorm"], p)
            opt.step(g)
        refused.append(refuse)
        traj.append([a.copy() for a in params])
    state, evaluated = opt.state_dict(), None
    if hasattr(opt, "eval"):
        opt.eval()
        evaluated = [a.copy() for a in params]
    return traj, refused, state, norm, evaluated


def assert_same_state(got, want):
    assert got["step_count"] == want["step_count"]
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"])
    for i, entry in want["state"].items():
        assert sorted(got["state"][i]) == sorted(entry), i
        for k, v in entry.items():
            g = got["state"][i][k]
            assert np.asarray(g).dtype == np.asarray(v).dtype and np.array_equal(g, v), (i, k)


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_matches_one_process_bit_for_bit(name, mpi_results):
    res = mpi_results[name]
    traj, refused, state, norm, evaluated = single_process(name)
    kind, _, _, _, opts, nan_at = CASES[name]
    assert res["mode"] == ("tensors" if kind in ("LAMB", "LARS", "Adafactor", "Muon", "LDoG", "Adan") else "elements")
    for k, (a, b) in enumerate(zip(res["traj"], traj)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), f"step {k}"
    skip = opts.get("nonfinite") == "skip"
    assert res["skipped"] == (sum(refused) if skip else 0)
    assert res["raised"] == (refused if opts.get("nonfinite") == "raise" else [False] * STEPS)
    assert any(refused) == bool(nan_at)
    assert res["step_count"] == state["step_count"] == STEPS - sum(refused)
    assert res["norm"] == norm                      # the global norm: bit-identical to etakit.grad_norm
    assert_same_state(res["state"], state)
    if evaluated is not None:
        assert all(np.array_equal(x, y) for x, y in zip(res["evaluated"], evaluated))
    resumed, resharded, same = zip(*res["checks"])
    assert all(same), "the ranks' parameters differ"
    assert all(resumed), "resumed from each rank's state_dict: not bit-identical"
    assert all(resharded), "one rank resumed from the consolidated state: not bit-identical"


def test_the_element_cut_splits_a_tensor_at_a_block(mpi_results):
    bounds = mpi_results["adamw_f64_clip"]["bounds"]
    assert bounds[0] == 0 < bounds[1] < bounds[2]
    assert bounds[1] == 3000 + BLOCK                          # inside the (50, 200) tensor, one block in
    whole = mpi_results["lamb_f64"]["bounds"]
    assert whole[1] == 13000                                  # at the end of that tensor


# ---- in one process --------------------------------------------------------------
def test_partition():
    assert partition([10000, 3000], 2) == [0, 8192, 13000]
    assert partition([10000, 3000], 2, whole_tensors=True) == [0, 10000, 13000]
    assert partition([5, 0, 5], 4, whole_tensors=True) == [0, 0, 5, 5, 10]    # the nearest tensor boundary
    assert partition([0], 3) == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 3 * BLOCK, rng.integers(1, 6)).tolist()
        ranks = int(rng.integers(1, 6))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for whole in (False, True):
            b = partition(sizes, ranks, whole)
            assert len(b) == ranks + 1 and b[0] == 0 and b[-1] == offsets[-1] and b == sorted(b)
            for cut in b:            # at a tensor boundary, or a block boundary inside a tensor
                i = int(np.searchsorted(offsets, cut, side="right")) - 1
                assert cut in offsets or (not whole and (cut - offsets[i]) % BLOCK == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_block_sums_add_up_to_grad_norms_sums(dtype, p):
    """Each block's sum is loop._blocked_sum of that block, and in order they add up to the tensor's."""
    from etakit.loop import _blocked_sum
    rng = np.random.default_rng(int(p))
    for n in (1, 17, BLOCK, BLOCK + 1, 3 * BLOCK - 5, 2049 * BLOCK + 7):
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)).astype(dtype)
        if n > 100:
            x[n // 2] = np.inf if p == 1.0 else np.nan
        sums = distributed._block_sums(x, p)
        assert sums.size == -(-n // BLOCK)
        for k in (0, sums.size // 2, sums.size - 1):
            assert np.array_equal(sums[k], _blocked_sum(x[k * BLOCK:(k + 1) * BLOCK], p), equal_nan=True)
        assert np.array_equal(np.add.accumulate(sums)[-1], _blocked_sum(x, p), equal_nan=True)


EXPECTED = {"elements": ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Lion", "NAdam", "RAdam", "Adamax", "ADOPT",
                         "AdEMAMix", "Adadelta", "ASGD", "Rprop", "ScheduleFreeAdamW", "ScheduleFreeSGD",
                         "ScheduleFreeRAdam"],
            "tensors": ["Adan", "LAMB", "LARS", "Adafactor", "Muon", "LDoG"],
            None: ["DoG", "Prodigy", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"]}


def test_every_rule_is_sharded_or_refused():
    assert sorted(sum(EXPECTED.values(), [])) == sorted(etakit.OPTIMIZERS)
    for how, kinds in EXPECTED.items():
        for kind in kinds:
            shape = (3, 4) if kind == "Muon" else (12,)
            opt = etakit.OPTIMIZERS[kind]([np.zeros(shape)])
            if how is None:
                with pytest.raises(ValueError, match=f"cannot shard {kind}"):
                    ShardedOptimizer(opt, MPI.COMM_SELF)
            else:
                assert ShardedOptimizer(opt, MPI.COMM_SELF).mode == how


def test_low_precision_state_set_later_is_refused_at_the_step():
    w = np.zeros(8, np.float32)
    opt = ShardedOptimizer(etakit.Adam([w]), MPI.COMM_SELF)
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    with pytest.raises(ValueError, match="low-precision"):
        opt.step([np.ones(8, np.float32)])
    assert opt.step_count == 0 and not w.any()


@pytest.mark.parametrize("kind,hp,ok,match", [
    ("LAMB", dict(pre_norm=True), {}, "pre_norm"),
    ("Adan", dict(max_grad_norm=1.0), {}, "max_grad_norm"),
    ("DoG", dict(layer_wise=False), dict(layer_wise=True), "cannot shard DoG"),
])
def test_options_that_reduce_over_every_tensor_are_refused(kind, hp, ok, match):
    with pytest.raises(ValueError, match=match):
        ShardedOptimizer(etakit.OPTIMIZERS[kind]([np.zeros(4)], **hp), MPI.COMM_SELF)
    opt = ShardedOptimizer(etakit.OPTIMIZERS[kind]([np.zeros(4)], **ok), MPI.COMM_SELF)    # set later: refused
    opt.param_groups[0].update(hp)
    w = opt.optimizer._params[0].copy()
    with pytest.raises(ValueError, match=match):
        opt.step([np.ones(4)])
    assert np.array_equal(opt.optimizer._params[0], w) and opt.step_count == 0


def test_bad_arguments():
    w = np.zeros(3)
    with pytest.raises(TypeError, match="etakit optimizer"):
        ShardedOptimizer([w], MPI.COMM_SELF)
    with pytest.raises(TypeError, match="intracommunicator"):
        ShardedOptimizer(etakit.SGD([w]), None)
    for kw, match in [(dict(global_clipnorm=-1.0), "global_clipnorm"), (dict(global_clipnorm=float("nan")), "global_clipnorm"),
                      (dict(global_clipnorm=True), "global_clipnorm"), (dict(norm_type=0), "norm_type"),
                      (dict(norm_type=-1.0), "norm_type"), (dict(nonfinite="warn"), "nonfinite")]:
        with pytest.raises(ValueError, match=match):
            ShardedOptimizer(etakit.SGD([w]), MPI.COMM_SELF, **kw)
    with pytest.raises(TypeError, match="one dtype"):
        ShardedOptimizer(etakit.SGD([w, np.zeros(2, np.float32)]), MPI.COMM_SELF)
    with pytest.raises(ValueError, match="low-precision"):
        ShardedOptimizer(etakit.Adam([np.zeros(3, np.float32)], state_dtype="bfloat16"), MPI.COMM_SELF)
    stepped = etakit.SGD([w])
    stepped.step([np.ones(3)])
    with pytest.raises(ValueError, match="stepped already"):
        ShardedOptimizer(stepped, MPI.COMM_SELF)


def test_bad_gradients_are_refused_before_anything_is_written():
    w = np.arange(6.0).reshape(2, 3)
    opt = ShardedOptimizer(etakit.Adam([w], lr=0.1), MPI.COMM_SELF)
    for g, err, match in [([np.ones(6)], etakit.GradientError, r"grads\[0\] has shape"),
                          ([np.ones((2, 3), np.float32)], etakit.GradientTypeError, "dtype"),
                          ([np.ones((2, 3))] * 2, etakit.GradientError, "2 gradients for 1"),
                          (np.ones((2, 3)), etakit.GradientTypeError, "list of arrays"),
                          ([[[1.0] * 3] * 2], etakit.GradientTypeError, "numpy array"),
                          (None, etakit.GradientError, "opt.grads")]:
        with pytest.raises(err, match=match):
            opt.step(g)
    assert np.array_equal(w, np.arange(6.0).reshape(2, 3)) and opt.step_count == 0
    opt.step([np.ones((2, 3)).T.copy().T])              # any layout is read (through a copy)
    assert opt.step_count == 1


def test_one_rank_is_the_plain_optimizer_with_clipping():
    """COMM_SELF: the step is the wrapped optimizer's on clipped gradients; parameters not given as
    views of one array are written back, and edits to them between steps are seen."""
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(s) for s in [(5000,), (3, 7), (9000,)]]
    ref = [w.copy() for w in ws]
    opt = ShardedOptimizer(etakit.AdamW(ws, lr=1e-2), MPI.COMM_SELF, global_clipnorm=1.0)
    plain = etakit.AdamW(ref, lr=1e-2)
    for k in range(4):
        g = [rng.standard_normal(w.shape) for w in ws]
        gr = [x.copy() for x in g]
        opt.step(g)
        assert opt.last_grad_norm == etakit.clip_grad_norm_(gr, 1.0)
        plain.step(gr)
        assert all(np.array_equal(a, b) for a, b in zip(ws, ref))
        ws[1][0, 0] = ref[1][0, 0] = float(k)         # edited by the user between steps
    opt.param_groups[0]["lr"] = plain.param_groups[0]["lr"] = 0.5      # hyperparameters: set on the wrapped groups
    g = [np.ones(w.shape) for w in ws]
    opt.step(g)
    gr = [x.copy() for x in g]
    etakit.clip_grad_norm_(gr, 1.0)
    plain.step(gr)
    assert all(np.array_equal(a, b) for a, b in zip(ws, ref))


def test_a_state_dict_of_another_layout_is_refused():
    w = np.zeros(10)
    opt = ShardedOptimizer(etakit.Adam([w]), MPI.COMM_SELF)
    opt.step([np.ones(10)])
    sd = opt.state_dict()
    sd["shard"] = {**sd["shard"], "rank": 1, "size": 2}
    other = ShardedOptimizer(etakit.Adam([np.zeros(10)]), MPI.COMM_SELF)
    with pytest.raises(etakit.StateError, match="rank 1 of 2"):
        other.load_state_dict(sd)
    bad = opt.consolidated_state_dict()
    bad["state"][0]["exp_avg"] = np.zeros(3)
    with pytest.raises(etakit.StateError, match="shape"):
        other.load_state_dict(bad)
    assert other.step_count == 0 and other.state_dict()["optimizer"]["state"] == {}


def test_distributed_is_the_only_module_that_imports_mpi4py():
    import pathlib
    src = pathlib.Path(etakit.__file__).parent
    users = sorted(p.name for p in src.glob("*.py") if "mpi4py" in p.read_text())
    assert users == ["distributed.py"]
    assert distributed.MPI is MPI


def test_the_wrapped_optimizers_loop_options_become_the_sharded_steps():
    ws = [np.ones(5), np.ones(3)]
    inner = etakit.AdamW(ws, lr=1e-2, global_clipnorm=0.5, nonfinite="skip")
    opt = ShardedOptimizer(inner, MPI.COMM_SELF)
    assert (opt.global_clipnorm, opt.norm_type, opt.nonfinite) == (0.5, 2.0, "skip")
    ref = [w.copy() for w in ws]
    g = [np.full(5, 3.0), np.full(3, -2.0)]
    opt.step([x.copy() for x in g])
    plain = etakit.AdamW(ref, lr=1e-2)
    clipped = [x.copy() for x in g]
    etakit.clip_grad_norm_(clipped, 0.5)
    plain.step(clipped)
    for a, b in zip(ws, ref):
        assert a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="ema_decay"):
        ShardedOptimizer(etakit.AdamW([np.ones(2)], ema_decay=0.9), MPI.COMM_SELF)
