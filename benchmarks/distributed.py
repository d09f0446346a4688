"""Scaling out: etakit.distributed.ShardedOptimizer on MPI, and etakit.sweep on Dask.

Four measurements, each side by side in one run (medians over steps; the step
variants interleaved, one of each per round):

1. **State memory per rank** against the rank count: the optimizer state
   each rank keeps (AdamW: two buffers) on 1 and 2 ranks, measured from the
   arrays, with the formula for N ranks;
2. **Step time on 2 ranks**: the sharded step (Reduce_scatter, the shard's
   fused step, Allgatherv) against the unsharded data-parallel step (an
   Allreduce of the gradients, then every rank steps the whole model), and
   the collectives alone; each rank on 1 thread (2 ranks on 2 cores);
3. **Bytes each rank sends per step**, measured on the wire: MPICH over TCP
   on the loopback of a private network namespace (``unshare -rn``), so the
   interface's byte counter sees these processes only, against the ZeRO-1
   formula ``2 (R - 1) / R * n * b``;
4. **Sweep wall time** of ``etakit.sweep`` on the demo problem on a
   LocalCluster of 1 and 2 worker processes (cluster start-up apart).

The MPI parts run this file under ``mpiexec`` (``--worker``).  The machine is
shared: quote the ratios.

Run: python benchmarks/distributed.py [--elements 16777216] [--steps 20] [--trials 8] [--epochs 40] [--markdown]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.abspath(__file__)
# this file's folder first on sys.path would make this file Dask's "distributed" package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(HERE)]


def _shapes(n):
    """A model of about n float32 elements: 24 tensors, matrices and their biases, of mixed sizes."""
    weights = [4, 1, 2, 3, 1, 1, 5, 2, 3, 1, 2, 7]
    unit = n / sum(weights)
    shapes = []
    for w in weights:
        cols = 256
        rows = max(1, int(unit * w) // cols)
        shapes += [(rows, cols), (cols,)]
    return shapes


def _flat_views(flat, shapes):
    out, o = [], 0
    for s in shapes:
        m = int(np.prod(s))
        out.append(flat[o:o + m].reshape(s))
        o += m
    return out


def _lo_tx():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":")[1].split()[8])
    return 0


# ---- under mpiexec ----------------------------------------------------------------
def worker(kind, out, elements, steps):
    from mpi4py import MPI

    import etakit
    from etakit.distributed import ShardedOptimizer

    comm = MPI.COMM_WORLD
    R, rank = comm.Get_size(), comm.Get_rank()
    etakit.set_num_threads(1)
    shapes = _shapes(elements)
    n = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(0)
    start = rng.standard_normal(n).astype(np.float32)
    grad = np.random.default_rng(1 + rank).standard_normal(n).astype(np.float32)
    res = {"ranks": R, "n": n, "tensors": len(shapes), "bytes_per_element": 4}

    def sent(step, k=3):
        step()
        comm.Barrier()
        b0 = _lo_tx()
        for _ in range(k):
            step()
        comm.Barrier()
        return (_lo_tx() - b0) / (k * R)       # the loopback sees every rank's bytes once

    variants = {}
    # sharded (ZeRO-1): flat parameters and gradients, no copies
    opt = ShardedOptimizer(etakit.AdamW(_flat_views(start.copy(), shapes), lr=1e-3), comm)
    clipped = ShardedOptimizer(etakit.AdamW(_flat_views(start.copy(), shapes), lr=1e-3), comm, global_clipnorm=1.0,
                               nonfinite="skip")
    for o in (opt, clipped):
        for g, v in zip(o.grads, _flat_views(grad, shapes)):
            g[...] = v
    variants["sharded"], variants["sharded_clip"] = opt.step, clipped.step
    # unsharded data parallel: all-reduce the gradients, every rank steps the whole model
    plain = etakit.AdamW(_flat_views(start.copy(), shapes), lr=1e-3)
    g2 = np.empty_like(grad)
    gviews = _flat_views(g2, shapes)

    def unsharded():
        g2[...] = grad
        comm.Allreduce(MPI.IN_PLACE, g2, op=MPI.SUM)
        if R > 1:
            np.divide(g2, R, out=g2)
        plain.step(gviews)

    variants["unsharded"] = unsharded
    if kind == "time":
        # the collectives alone
        bounds = list(np.linspace(0, n, R + 1).astype(int))
        counts = [bounds[r + 1] - bounds[r] for r in range(R)]
        recv = np.empty(counts[rank], np.float32)
        buf = start.copy()
        variants["collectives_zero"] = lambda: (comm.Reduce_scatter(grad, recv, counts, op=MPI.SUM),
                                                comm.Allgatherv(MPI.IN_PLACE, [buf, counts, bounds[:-1], MPI.FLOAT]))
        variants["collective_allreduce"] = lambda: comm.Allreduce(MPI.IN_PLACE, g2, op=MPI.SUM)
        # interleaved: every round times each variant once, so a burst of load hits them alike
        times = {k: [] for k in variants}
        for r in range(steps + 2):
            for k, step in variants.items():
                comm.Barrier()
                t0 = time.perf_counter()
                step()
                t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)   # the step ends with the slowest rank
                if r >= 2:
                    times[k].append(t)
        res.update({k: float(np.median(v)) for k, v in times.items()})
    else:
        res.update({k: sent(step) for k, step in variants.items()})
    res["state_bytes"] = comm.gather(sum(a.nbytes for st in opt._inner._state for a in st.values()), root=0)
    res["shard_elements"] = [opt.bounds[r + 1] - opt.bounds[r] for r in range(R)]
    res["recv_bytes"] = opt._recv.nbytes
    res["unsharded_state_bytes"] = sum(a.nbytes for st in plain._state for a in st.values())
    if rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)


# ---- the parent: runs the workers, the sweep, and prints the tables ----------------------
def _mpiexec():
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def run_mpi(ranks, kind, elements, steps, tcp=False):
    out = tempfile.mktemp(suffix=".json")
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, HERE, "--worker", kind, out, "--elements", str(elements),
           "--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tcp:
        # TCP over the loopback of a network namespace of our own: its byte counter is ours alone
        env.update(MPIR_CVAR_NOLOCAL="1", MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp")
        cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


def _warm_up():
    """A worker's imports and the digits, before the timed sweep (so that is start-up, not sweep)."""
    from etakit.demo import load_digits_split
    load_digits_split(0)


def sweep_times(trials, epochs, hidden):
    # one thread per worker process: BLAS (the MLP's matrix products) and etakit's kernels
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import distributed
    from threadpoolctl import threadpool_limits

    import etakit
    from etakit.sweeps import _Demo

    demo = _Demo("AdamW", epochs, hidden)
    lrs = list(np.geomspace(1e-4, 1e-1, trials))
    out = {}
    _warm_up()
    with threadpool_limits(1):
        t0 = time.perf_counter()
        serial = etakit.sweep(demo, lrs, client="serial", progress=False)
        out["serial (this process)"] = (time.perf_counter() - t0, None)
    import dask

    # as etakit.sweep's own LocalCluster: without Dask's MALLOC_TRIM_THRESHOLD_ (see etakit.sweeps._Dask)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    for w in (1, 2):
        t0 = time.perf_counter()
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
                distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                                         silence_logs=40) as cluster, distributed.Client(cluster) as client:
            client.wait_for_workers(w)
            client.run(_warm_up)
            up = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = etakit.sweep(demo, lrs, client=client, progress=False)
            out[f"LocalCluster, {w} worker{'s' if w > 1 else ''}"] = (time.perf_counter() - t1, up)
        assert [r["final_loss"] for r in res.rows] == [r["final_loss"] for r in serial.rows]
    return out, lrs


def _mb(b):
    return f"{b / 2**20:.1f} MB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=int, default=1 << 24, help="model size in float32 elements (default 16.8M)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (median)")
    ap.add_argument("--trials", type=int, default=8, help="trainings per sweep")
    ap.add_argument("--epochs", type=int, default=40, help="epochs per sweep trial")
    ap.add_argument("--hidden", type=int, default=512, help="hidden units of the sweep's MLP")
    ap.add_argument("--markdown", action="store_true", help="tables as Markdown")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.elements, args.steps)
    if _mpiexec() is None:
        sys.exit("needs mpiexec and mpi4py: pip install 'etakit[mpi]'")
    md = args.markdown

    def table(head, rows):
        if md:
            print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
            for r in rows:
                print("| " + " | ".join(map(str, r)) + " |")
        else:
            w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
            for r in [head] + rows:
                print("  ".join(str(x).ljust(k) for x, k in zip(r, w)))
        print()

    one = run_mpi(1, "time", args.elements, args.steps)
    two = run_mpi(2, "time", args.elements, args.steps)
    n, b = two["n"], two["bytes_per_element"]
    full = one["unsharded_state_bytes"]
    print(f"AdamW, float32, {n:,} elements in {two['tensors']} tensors; each rank 1 thread; machine shared "
          f"(2 cores, other jobs running)\n")
    print("State memory per rank (measured: the arrays each rank's optimizer keeps):")
    rows = [["1", _mb(one["state_bytes"][0]), "1.00", _mb(2 * n * b)]]
    rows.append(["2", " / ".join(_mb(s) for s in two["state_bytes"]),
                 f"{max(two['state_bytes']) / full:.3f}", _mb(2 * n * b / 2)])
    for N in (4, 8, 64):
        rows.append([str(N), "-", f"{1 / N:.3f}", _mb(2 * n * b / N)])
    table(["ranks", "state per rank (measured)", "x unsharded", "formula 2 n b / N"], rows)
    print(f"(unsharded: {_mb(full)} on every rank; the shards are cut at 4096-element blocks: "
          f"{two['shard_elements']} elements; each rank also holds its reduced gradient shard, "
          f"{_mb(two['recv_bytes'])} on 2 ranks)\n")
    print("Step time on 2 ranks (median; the slowest rank):")
    ref = two["unsharded"]
    rows = [["unsharded: Allreduce + whole step on every rank", f"{ref * 1e3:.1f} ms", "1.00"],
            ["sharded: Reduce_scatter + shard step + Allgatherv", f"{two['sharded'] * 1e3:.1f} ms",
             f"{ref / two['sharded']:.2f}"],
            ["sharded + global-norm clip + non-finite skip", f"{two['sharded_clip'] * 1e3:.1f} ms",
             f"{ref / two['sharded_clip']:.2f}"],
            ["collectives alone: Reduce_scatter + Allgatherv", f"{two['collectives_zero'] * 1e3:.1f} ms", "-"],
            ["collective alone: Allreduce", f"{two['collective_allreduce'] * 1e3:.1f} ms", "-"],
            ["1 rank: the whole step, no communication", f"{one['unsharded'] * 1e3:.1f} ms", "-"]]
    table(["2 ranks", "per step", "speed-up over unsharded"], rows)
    if shutil.which("unshare"):
        try:
            tcp = run_mpi(2, "bytes", args.elements, args.steps, tcp=True)
        except RuntimeError as e:
            tcp = None
            print(f"bytes on the wire not measured: {e}\n")
        if tcp:
            formula = 2 * (2 - 1) / 2 * n * b
            print("Bytes each rank sends per step (measured on the loopback over TCP, headers included):")
            rows = [["sharded (ZeRO-1)", _mb(tcp["sharded"]), _mb(formula), f"{tcp['sharded'] / formula:.3f}"],
                    ["sharded + clip (norm block sums)", _mb(tcp["sharded_clip"]),
                     _mb(formula + (2 - 1) / 2 * 8 * -(-n // 4096)), f"{tcp['sharded_clip'] / formula:.3f}"],
                    ["unsharded (Allreduce)", _mb(tcp["unsharded"]), _mb(formula), f"{tcp['unsharded'] / formula:.3f}"]]
            table(["2 ranks", "sent per rank per step", "formula 2 (R-1)/R n b", "measured / formula"], rows)
    else:
        print("bytes on the wire not measured: needs unshare (util-linux)\n")
    try:
        import distributed  # noqa: F401
        import sklearn  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError:
        print("sweep not measured: needs pip install 'etakit[sweep,demo]' threadpoolctl")
        return 0
    times, lrs = sweep_times(args.trials, args.epochs, args.hidden)
    print(f"etakit.sweep on the demo problem: {len(lrs)} trainings (AdamW, {args.epochs} epochs, MLP 64-{args.hidden}-10), "
          "worker processes of one thread:")
    base = times["LocalCluster, 1 worker"][0]
    rows = [[k, f"{t:.1f} s", f"{base / t:.2f}", "-" if up is None else f"{up:.1f} s"] for k, (t, up) in times.items()]
    table(["where", "wall time", "speed-up over 1 worker", "cluster start-up (apart)"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
