"""etakit.torch optimizers under torch.distributed: DistributedDataParallel and ZeroRedundancyOptimizer.

Two real processes (torch.multiprocessing, gloo over 127.0.0.1), as torch's own distributed
tests run.  Each rank trains the same small float64 MLP on its own data; the trajectory must
equal that of one process stepping the same optimizer on the averaged gradients ((g0 + g1) / 2,
as DDP's all-reduce forms them).  Under ZeroRedundancyOptimizer each rank's optimizer holds a
partition of the parameters (whole tensors); its consolidated ``state_dict`` must equal the
single-process optimizer's, and a run resumed from it must continue bit-identically.  (The
trajectories are compared bit for bit; the state at rtol 1e-12.)

One spawn runs every case (the processes' start-up, a few seconds, is most of the cost).
"""
import io
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import etakit  # noqa: E402
import etakit.torch  # noqa: E402
from rule_cases import CASES  # noqa: E402

WORLD = 2
STEPS, RESUME_AT = 8, 5
# Rules whose step reduces over every tensor of a group (the step size d of Prodigy and D-Adaptation,
# DoG's global distance): under ZeRO each rank's optimizer reduces over its own partition, so their
# trajectories differ from one process's (a property of ZeRO's per-rank optimizers, not of etakit).
ACROSS_TENSORS = {"Prodigy", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad", "DoG"}


def _case(kind, zero=False):
    """The richest option case of a rule; under ZeRO without options that reduce over all tensors."""
    for hp in reversed(CASES[kind]):
        if not zero or not (hp.get("pre_norm") or hp.get("max_grad_norm")):
            return dict(hp)
    raise AssertionError(kind)


def _model(kind, seed=0):
    torch.manual_seed(seed)
    bias = not etakit.torch.__dict__[kind]._numpy.__name__ == "Muon"   # Muon updates matrices only
    return torch.nn.Sequential(torch.nn.Linear(5, 6, bias=bias), torch.nn.Tanh(), torch.nn.Linear(6, 3, bias=bias),
                               torch.nn.Tanh(), torch.nn.Linear(3, 2, bias=bias)).double()


def _batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)


def _loss(model, step, rank):
    x, y = _batch(step, rank)
    return torch.nn.functional.mse_loss(model(x), y)


def _ready(opt):
    if hasattr(opt, "train"):       # schedule-free: steps in train mode
        opt.train()
    return opt


def _ready_zero(zero):
    """A ZeroRedundancyOptimizer around a schedule-free optimizer in train mode.  ZeRO copies its own
    groups onto the local optimizer's before each step, so the mode (a group key, as in the
    schedulefree package) is set in both."""
    _ready(zero.optim)
    for mine, local in zip(zero.param_groups, zero.optim.param_groups):
        if "train_mode" in local:
            mine["train_mode"] = local["train_mode"]
    return zero


def _snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def _through_a_file(obj):
    """``obj`` saved and loaded back (state_dict tensors alias the optimizer's live buffers)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ---- the workers ------------------------------------------------------------
def _worker(rank, port, kinds, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    etakit.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    try:
        for kind in kinds:
            cls = getattr(etakit.torch, kind)
            # DistributedDataParallel, the optimizer unchanged
            model = _model(kind)
            ddp = DDP(model, gradient_as_bucket_view=True)     # the gradients: views into DDP's buckets
            opt = _ready(cls(ddp.parameters(), **_case(kind)))
            traj = []
            for step in range(STEPS):
                opt.zero_grad()
                _loss(ddp, step, rank).backward()
                opt.step()
                traj.append(_snapshot(model))
            results[kind, "ddp"] = traj
            results[kind, "ddp_state"] = opt.state_dict() if rank == 0 else None
            if kind in ACROSS_TENSORS:
                continue
            # ZeroRedundancyOptimizer with the etakit class as its local optimizer; consolidated
            # state at RESUME_AT, then a second run resumed from it
            model = _model(kind)
            ddp = DDP(model)
            # (the parameters: views into ZeRO's buckets)
            zero = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=cls, parameters_as_bucket_view=True,
                                           **_case(kind, zero=True))
            _ready_zero(zero)
            results[kind, "local"] = sum(len(g["params"]) for g in zero.optim.param_groups)
            traj, saved = [], None
            for step in range(STEPS):
                if step == RESUME_AT:
                    zero.consolidate_state_dict(to=0)
                    sd = [_through_a_file(zero.state_dict()) if rank == 0 else None]
                    dist.broadcast_object_list(sd, src=0)      # the checkpoint every rank loads
                    saved = (sd[0], _snapshot(model))
                zero.zero_grad()
                _loss(ddp, step, rank).backward()
                zero.step()
                traj.append(_snapshot(model))
            zero.consolidate_state_dict(to=0)
            results[kind, "zero"] = traj
            results[kind, "zero_state"] = zero.state_dict() if rank == 0 else None
            # resume: a new model and optimizer from the checkpoint
            model = _model(kind, seed=1)
            with torch.no_grad():
                for p, v in zip(model.parameters(), saved[1]):
                    p.copy_(v)
            ddp = DDP(model)
            zero = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=cls, **_case(kind, zero=True))
            _ready_zero(zero)
            zero.load_state_dict(saved[0])
            resumed = []
            for step in range(RESUME_AT, STEPS):
                zero.zero_grad()
                _loss(ddp, step, rank).backward()
                zero.step()
                resumed.append(_snapshot(model))
            results[kind, "resumed"] = resumed
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(kinds, tmp_path):
    mp.spawn(_worker, args=(_free_port(), kinds, str(tmp_path)), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---- the single process it must equal ----------------------------------------
def _single(kind, zero=False):
    """Parameters after each step, and the final optimizer, of one process on the averaged gradients."""
    model = _model(kind)
    opt = _ready(getattr(etakit.torch, kind)(model.parameters(), **_case(kind, zero)))
    traj = []
    for step in range(STEPS):
        grads = []
        for rank in range(WORLD):
            model.zero_grad()
            _loss(model, step, rank).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, g0, g1 in zip(model.parameters(), *grads):
            p.grad = (g0 + g1) / WORLD
        opt.step()
        traj.append(_snapshot(model))
    return traj, opt


def _assert_traj(got, want, what):
    # bit for bit (stronger than the rtol 1e-12 asked for): with 2 ranks DDP's mean is (g0 + g1) / 2 exactly
    for step, (a, b) in enumerate(zip(got, want)):
        for j, (x, y) in enumerate(zip(a, b)):
            assert torch.equal(x, y), f"{what}: step {step}, parameter {j}, max diff {(x - y).abs().max():.3g}"


def _assert_state(got, want, what):
    assert sorted(got["state"]) == sorted(want["state"]), what
    for i, entry in want["state"].items():
        assert sorted(got["state"][i]) == sorted(entry), (what, i)
        for name, v in entry.items():
            np.testing.assert_allclose(np.asarray(got["state"][i][name], dtype=np.float64),
                                       np.asarray(v, dtype=np.float64), rtol=1e-12, atol=1e-300,
                                       err_msg=f"{what}: state[{i}][{name!r}]")


def _check(kinds, tmp_path):
    ranks = _spawn(kinds, tmp_path)
    for kind in kinds:
        want, opt = _single(kind)
        for rank, res in enumerate(ranks):
            _assert_traj(res[kind, "ddp"], want, f"{kind} DDP rank {rank}")
        _assert_state(ranks[0][kind, "ddp_state"], opt.state_dict(), f"{kind} DDP state")
        if kind in ACROSS_TENSORS:
            continue
        want, opt = _single(kind, zero=True)
        local = [res[kind, "local"] for res in ranks]     # each rank's optimizer holds its partition only
        assert min(local) > 0 and sum(local) == len(want[0]), (kind, local)
        for rank, res in enumerate(ranks):
            _assert_traj(res[kind, "zero"], want, f"{kind} ZeRO rank {rank}")
            resumed = res[kind, "resumed"]
            for a, b in zip(resumed, res[kind, "zero"][RESUME_AT:]):
                assert all(torch.equal(x, y) for x, y in zip(a, b)), f"{kind} ZeRO resumed, rank {rank}"
        _assert_state(ranks[0][kind, "zero_state"], opt.state_dict(), f"{kind} ZeRO consolidated state")


def test_ddp_and_zero_match_one_process(tmp_path):
    # every rule in one spawn: the processes' start-up is most of the time (about 15 s for all 28 rules
    # on 2 busy cores, 13 s for 8 of them)
    _check(list(etakit.OPTIMIZERS), tmp_path)


@pytest.mark.parametrize("kind", ["SGD", "AdamW", "Adafactor", "Muon"])
def test_state_entries_replaced_directly_are_used(kind):
    """ZeroRedundancyOptimizer.load_state_dict writes ``optim.state[p] = {...}`` itself; a drop-in that
    has stepped must step from the new entries (not from the buffers its plan pointed at)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64)) for _ in range(2)]
    opt = getattr(etakit.torch, kind)(params, **_case(kind))

    def step(k):
        for i, p in enumerate(params):
            p.grad = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(3, 2) * (k + i + 1)
        opt.step()

    for k in range(3):
        step(k)
    saved = _through_a_file((opt.state_dict(), [p.detach().clone() for p in params]))
    step(3)
    want = [p.detach().clone() for p in params]
    step(4)                                    # the buffers move on
    with torch.no_grad():
        for p, v in zip(params, saved[1]):
            p.copy_(v)
    for i, p in enumerate(params):
        opt.state[p] = saved[0]["state"][i]
    step(3)
    for p, w in zip(params, want):
        assert torch.equal(p.detach(), w)
