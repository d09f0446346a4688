"""The runs tests/test_distributed_mpi.py compares: shared by the MPI worker (tests/mpi_sharded_worker.py,
under mpiexec) and the single-process reference in the test, so both build the same parameters and
gradients from the same seeds."""
import numpy as np

STEPS, RESUME_AT = 7, 4

# sizes that put the element-wise cut of 2 ranks inside a tensor (at a multiple of 4096 from its
# start), an empty tensor, and tensors smaller than one block
SHAPES = [(3000,), (50, 200), (7,), (0, 4), (130, 40), (1,)]
MATRICES = [(40, 30), (70, 80), (0, 5), (20, 20)]          # Muon: 2-D only

# name: (optimizer, hyperparameters, dtype, how parameters and gradients are held, ShardedOptimizer options,
#        {step: rank whose gradient has a NaN there})
CASES = {
    "sgd_momentum_f32": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2), np.float32, "copy",
                         {}, {}),
    "adamw_f64_clip": ("AdamW", dict(lr=1e-2, amsgrad=True), np.float64, "flat", dict(global_clipnorm=20.0), {}),
    "adamw_f32_grads_skip": ("AdamW", dict(lr=1e-2), np.float32, "grads",
                             dict(global_clipnorm=20.0, nonfinite="skip"), {2: 1}),
    "nadam_f64_inf_norm": ("NAdam", dict(lr=1e-2, momentum_decay=0.5), np.float64, "copy",
                           dict(global_clipnorm=1.5, norm_type=float("inf")), {}),
    "asgd_f64_raise": ("ASGD", dict(lr=0.05, t0=2.0), np.float64, "flat", dict(nonfinite="raise"), {3: 0}),
    "rprop_f32": ("Rprop", dict(lr=0.02), np.float32, "flat", {}, {}),
    "schedulefree_f64": ("ScheduleFreeAdamW", dict(lr=1e-2, warmup_steps=3, weight_decay=1e-2), np.float64, "copy",
                         dict(global_clipnorm=30.0), {}),
    "lamb_f64": ("LAMB", dict(lr=1e-2, weight_decay=0.1), np.float64, "flat", dict(global_clipnorm=20.0), {}),
    "lars_f32": ("LARS", dict(lr=1e-2, nesterov=True), np.float32, "copy", {}, {}),
    "adafactor_f32": ("Adafactor", dict(lr=0.03, weight_decay=0.05), np.float32, "flat", {}, {}),
    "muon_f64": ("Muon", dict(lr=0.02), np.float64, "copy", dict(global_clipnorm=10.0), {}),
    "ldog_f64": ("LDoG", dict(), np.float64, "flat", {}, {}),
    "adan_f64": ("Adan", dict(lr=1e-2, weight_decay=1e-2), np.float64, "copy", {}, {}),
}


def shapes(kind):
    return MATRICES if kind == "Muon" else SHAPES


def make_params(name):
    """The case's parameters (the same on every rank): views of one array for "flat", separate arrays else."""
    kind, _, dtype, layout, _, _ = CASES[name]
    rng = np.random.default_rng(7)
    values = [rng.standard_normal(s).astype(dtype) for s in shapes(kind)]
    if layout != "flat":
        return values
    flat = np.empty(sum(v.size for v in values), dtype)
    out, o = [], 0
    for v in values:
        out.append(flat[o:o + v.size].reshape(v.shape))
        out[-1][...] = v
        o += v.size
    return out


def grads(name, step, rank, params):
    """Rank ``rank``'s gradients at ``step`` (depending on the parameters, as a loss's would)."""
    _, _, dtype, _, _, nan_at = CASES[name]
    rng = np.random.default_rng(1000 * step + rank)
    out = [(rng.standard_normal(p.shape) + 0.5 * p).astype(dtype) for p in params]
    if nan_at.get(step) == rank:
        big = max(range(len(out)), key=lambda i: out[i].size)
        out[big].reshape(-1)[out[big].size // 2] = np.nan
    return out


def mean(gs):
    """The mean of the ranks' gradients, as the sharded step forms it: the sum, then / rank count."""
    total = [g.copy() for g in gs[0]]
    for other in gs[1:]:
        for t, g in zip(total, other):
            t += g
    return [t / len(gs) for t in total]
