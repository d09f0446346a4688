# examples/sharded_mpi.py: linear regression, data-parallel over MPI ranks, AdamW state sharded
import numpy as np
from mpi4py import MPI

import etakit
from etakit.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
rng = np.random.default_rng(comm.rank)              # each rank: its own data
X = rng.standard_normal((512, 64))
y = X @ np.linspace(-1, 1, 64) + 0.5
flat = np.zeros(64 + 1)                              # the parameters as views of one array:
w, b = flat[:64], flat[64:]                          # the all-gather writes into them, no copies
opt = ShardedOptimizer(etakit.AdamW([w, b], lr=0.05), comm, global_clipnorm=10.0, nonfinite="skip")
for step in range(300):
    r = X @ w + b - y
    opt.step([X.T @ r / len(y), np.array([r.mean()])])    # every rank calls step
etakit.save(f"ckpt.rank{comm.rank}.npz", opt)        # this rank's shard of the state
whole = opt.consolidated_state_dict()                # the whole state, on rank 0 (for any rank count)
if comm.rank == 0:
    print(f"loss {0.5 * np.mean(r * r):.2e} on rank 0 after {opt.step_count} steps; {opt!r}")
