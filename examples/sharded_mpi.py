# examples/sharded_mpi.py: linear regression, data-parallel over MPI ranks, AdamW state sharded
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")       # one BLAS thread per rank: the ranks share the cores
import numpy as np
from mpi4py import MPI

import etakit
from etakit.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
rng = np.random.default_rng(comm.rank)              # each rank: its own data
X = rng.standard_normal((512, 64))
Y = X @ np.linspace(-1, 1, 64 * 128).reshape(64, 128) + 0.5
flat = np.zeros(64 * 128 + 128)                     # the parameters as views of one array: the all-gather
W, b = flat[:8192].reshape(64, 128), flat[8192:]     # writes into them, no copies (8320 elements: shards are
opt = ShardedOptimizer(etakit.AdamW([W, b], lr=0.05), comm,     # cut at 4096-element blocks)
                       global_clipnorm=10.0, nonfinite="skip")
for step in range(300):
    R = X @ W + b - Y
    opt.step([X.T @ R / len(X), R.mean(axis=0)])    # every rank calls step
etakit.save(f"ckpt.rank{comm.rank}.npz", opt)        # this rank's shard of the state
whole = opt.consolidated_state_dict()                # the whole state, on rank 0 (for any rank count)
if comm.rank == 0:
    print(f"loss {0.5 * np.mean(R * R):.2e} on rank 0 after {opt.step_count} steps; {opt!r}")
