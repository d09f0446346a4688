"""Run under ``mpiexec -n 2`` by tests/test_distributed_mpi.py: every case of tests/sharded_cases.py
through etakit.distributed.ShardedOptimizer; rank 0 pickles what the test compares to ``argv[1]``.

Besides the trajectories, each rank checks here what needs the ranks themselves: that every rank
ends with the same parameters, that a run resumed from each rank's own state_dict continues
bit-identically, and that a one-rank ShardedOptimizer (COMM_SELF) resumed from the consolidated
state continues the same trajectory."""
import copy
import pickle
import sys

import numpy as np
from mpi4py import MPI

import etakit
from etakit.distributed import ShardedOptimizer
from sharded_cases import CASES, RESUME_AT, STEPS, grads, make_params, mean

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
etakit.set_num_threads(1)


def build(name, params, comm):
    kind, hp, _, _, opts, _ = CASES[name]
    opt = ShardedOptimizer(getattr(etakit, kind)(params, **hp), comm, **opts)
    if hasattr(opt.optimizer, "train"):
        opt.train()
    return opt


def step(name, opt, g):
    """One step; True if it was refused (nonfinite="raise"), with the parameters unchanged."""
    if CASES[name][3] == "grads":
        for dst, src in zip(opt.grads, g):
            dst[...] = src
        g = None
    before = [p.copy() for p in opt.optimizer._params]
    try:
        opt.step(g)
    except etakit.GradientError as e:
        assert "non-finite" in str(e) and e.index is not None, e
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, opt.optimizer._params))
        return True
    return False


results = {}
for name in CASES:
    params = make_params(name)
    opt = build(name, params, comm)
    traj, raised, saved = [], [], None
    for k in range(STEPS):
        if k == RESUME_AT:
            saved = (copy.deepcopy(opt.state_dict()), [p.copy() for p in params], opt.consolidated_state_dict())
        raised.append(step(name, opt, grads(name, k, rank, params)))
        traj.append([p.copy() for p in params])
    everyone = comm.gather(traj[-1], root=0)
    same = rank != 0 or all(all(np.array_equal(a, b) for a, b in zip(t, traj[-1])) for t in everyone)
    final_state = opt.consolidated_state_dict()
    evaluated = None
    if hasattr(opt.optimizer, "eval"):
        opt.eval()
        evaluated = [p.copy() for p in params]
    # resume each rank from its own state dict
    params2 = [p.copy() for p in saved[1]]
    opt2 = build(name, params2, comm)
    opt2.load_state_dict(saved[0])
    for k in range(RESUME_AT, STEPS):
        step(name, opt2, grads(name, k, rank, params2))
    resumed = all(np.array_equal(a, b) for a, b in zip(params2, traj[-1]))
    # one rank from the consolidated state (on rank 0; sent to every rank, as a file would be)
    whole = comm.bcast(saved[2], root=0)
    params3 = [p.copy() for p in saved[1]]
    opt3 = build(name, params3, MPI.COMM_SELF)
    opt3.load_state_dict(whole)
    for k in range(RESUME_AT, STEPS):
        step(name, opt3, mean([grads(name, k, r, params3) for r in range(size)]))
    resharded = all(np.array_equal(a, b) for a, b in zip(params3, traj[-1]))
    ok = comm.gather((resumed, resharded, same), root=0)
    results[name] = dict(traj=traj, raised=raised, state=final_state, evaluated=evaluated, checks=ok,
                         skipped=opt.skipped_steps, bounds=opt.bounds, mode=opt.mode,
                         step_count=opt.step_count, norm=opt.last_grad_norm)

if rank == 0:
    with open(sys.argv[1], "wb") as f:
        pickle.dump(results, f)
