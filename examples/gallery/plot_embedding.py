"""
Embedding etakit: PyTorch, SciPy and Cython
===========================================

The same kernels serve three kinds of caller:

1. **PyTorch.**  ``etakit.torch.AdamW`` is a ``torch.optim.Optimizer`` with
   ``torch.optim.AdamW``'s signature, defaults and state names, running
   etakit's fused step on the tensors' own memory.  Trained side by side from
   the same weights on the same minibatches (float64), the two give the same
   weights to ``rtol=1e-9``, and a checkpoint of one loads into the other.
2. **SciPy.**  :func:`etakit.minimize` has ``scipy.optimize.minimize``'s
   calling and result conventions, and :func:`etakit.scipy_method` plugs the
   same solver into ``scipy.optimize.minimize`` itself: both routes give the
   same point on the Rosenbrock function.
3. **Cython.**  Another extension ``cimport``\\ s the kernels from
   :mod:`etakit.cykernels` and runs a whole training loop without the GIL or
   any Python call per step.  Compiled here, at build time, it gives the same
   bits as :class:`etakit.Adam` stepping the same problem from Python.
"""

import copy
import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.optimize
import torch
from sklearn.datasets import load_diabetes

import etakit
import etakit.torch

# %%
# 1. A PyTorch drop-in
# --------------------
# A small network on the diabetes data, once with ``torch.optim.AdamW`` and
# once with ``etakit.torch.AdamW`` (the only line that changes).

X, y = load_diabetes(return_X_y=True)
X = torch.tensor((X - X.mean(0)) / X.std(0))
y = torch.tensor((y - y.mean()) / y.std()).unsqueeze(1)


def train(opt_class, steps=200, state=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    opt = opt_class(model.parameters(), lr=1e-2, weight_decay=1e-2)
    if state is not None:
        model.load_state_dict(state[0])
        opt.load_state_dict(state[1])
    batches = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=batches)
        loss = torch.nn.functional.mse_loss(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, opt, losses


ref_model, ref_opt, ref_losses = train(torch.optim.AdamW)
eta_model, eta_opt, eta_losses = train(etakit.torch.AdamW)
for a, b in zip(ref_model.parameters(), eta_model.parameters()):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=0)
# a torch.optim.AdamW checkpoint resumes in etakit.torch.AdamW: same state names, same layout
# (deep copies: loading shares the checkpoint's tensors, which the next step updates in place)
checkpoint = (ref_model.state_dict(), ref_opt.state_dict())
resumed, _, _ = train(etakit.torch.AdamW, steps=1, state=copy.deepcopy(checkpoint))
continued, _, _ = train(torch.optim.AdamW, steps=1, state=copy.deepcopy(checkpoint))
for a, b in zip(resumed.parameters(), continued.parameters()):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=0)
print(f"final minibatch loss: torch.optim.AdamW {ref_losses[-1]:.6f}, etakit.torch.AdamW {eta_losses[-1]:.6f}")

fig, ax = plt.subplots(figsize=(7, 3.8))
ax.plot(ref_losses, lw=3, color="0.7", label="torch.optim.AdamW")
ax.plot(eta_losses, lw=1, color="C0", label="etakit.torch.AdamW")
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("minibatch MSE")
ax.set_title("PyTorch: the same trajectory")
ax.legend()
fig.tight_layout()

# %%
# 2. SciPy's interface
# --------------------
# Adam with a warmup-cosine schedule on the Rosenbrock function, through
# :func:`etakit.minimize` and through ``scipy.optimize.minimize(method=etakit.scipy_method)``:
# the same point, reached before ``maxiter`` (the largest gradient component
# fell below ``gtol``, so ``success`` is True).

x0 = np.array([-1.2, 1.0])
lr = etakit.schedules.warmup_cosine(0.1, 100, 5000, min_lr=1e-4)
path = []
res = etakit.minimize(scipy.optimize.rosen, x0, jac=scipy.optimize.rosen_der, method="adam", lr=lr,
                      maxiter=5000, gtol=1e-6, callback=lambda xk: path.append(xk))
res2 = scipy.optimize.minimize(scipy.optimize.rosen, x0, jac=scipy.optimize.rosen_der, method=etakit.scipy_method,
                               options={"optimizer": "adam", "lr": lr, "maxiter": 5000, "gtol": 1e-6})
print(res)
np.testing.assert_array_equal(res.x, res2.x)
assert res.success and res.nit < 5000 and np.allclose(res.x, 1.0, atol=1e-5)

path = np.array([x0] + path)
g1, g2 = np.meshgrid(np.linspace(-1.5, 1.5, 300), np.linspace(-0.5, 1.6, 300))
fig, ax = plt.subplots(figsize=(7, 4.2))
ax.contour(g1, g2, scipy.optimize.rosen([g1, g2]), levels=np.geomspace(0.01, 500, 15), colors="0.8",
                linewidths=0.8)
ax.plot(path[:, 0], path[:, 1], "C1-", lw=1.2, label=f"Adam, {res.nit} iterations")
ax.plot(1, 1, "k*", ms=10, label="minimum (1, 1)")
ax.set_title("SciPy: etakit.minimize on Rosenbrock")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# 3. A Cython extension
# ---------------------
# A training loop written in Cython: the gradient of an ill-conditioned
# quadratic :math:`\tfrac12 \sum_i a_i (p_i - t_i)^2` and an Adam step per
# iteration, all ``nogil``.  It needs ``include_dirs=[etakit.get_include()]``
# and nothing to link.

SOURCE = textwrap.dedent('''
    # cython: language_level=3, boundscheck=False, wraparound=False
    from etakit.cykernels cimport adam_f64, etk_adam_hp

    def fit(double[::1] p, double[::1] a, double[::1] t, double[::1] m, double[::1] v,
            double[::1] g, double lr, long steps, double[::1] losses):
        """Adam on 0.5 * sum(a * (p - t)**2); returns etakit's status (0: success)."""
        cdef etk_adam_hp hp
        cdef void *state[3]
        cdef Py_ssize_t i, n = p.shape[0]
        cdef long k
        cdef int st = 0
        cdef double loss
        hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay = lr, 0.9, 0.999, 1e-8, 0.0
        hp.amsgrad = hp.maximize = hp.decoupled_weight_decay = 0
        state[0], state[1], state[2] = &m[0], &v[0], NULL     # exp_avg, exp_avg_sq, max_exp_avg_sq
        with nogil:
            for k in range(steps):
                loss = 0.0
                for i in range(n):
                    g[i] = a[i] * (p[i] - t[i])
                    loss += 0.5 * a[i] * (p[i] - t[i]) * (p[i] - t[i])
                losses[k] = loss
                st = adam_f64(&p[0], &g[0], state, n, &hp, k + 1)
                if st != 0:
                    break
        return st
''')
BUILD = textwrap.dedent('''
    import os, etakit
    from setuptools import Extension, setup
    from Cython.Build import cythonize
    parent = os.path.dirname(os.path.dirname(etakit.__file__))      # where etakit/cykernels.pxd is
    ext = Extension("fit_adam", ["fit_adam.pyx"], include_dirs=[etakit.get_include()], extra_compile_args=["-O1"])
    setup(ext_modules=cythonize([ext], include_path=[etakit.get_include(), parent], quiet=True),
          script_args=["build_ext", "--inplace", "-q"])
''')
build_dir = tempfile.mkdtemp(prefix="etakit-gallery-")
with open(os.path.join(build_dir, "fit_adam.pyx"), "w") as f:
    f.write(SOURCE)
with open(os.path.join(build_dir, "build.py"), "w") as f:
    f.write(BUILD)
t0 = time.perf_counter()
r = subprocess.run([sys.executable, "build.py"], cwd=build_dir, capture_output=True, text=True, timeout=300)
assert r.returncode == 0, r.stdout + r.stderr
built = next(f for f in os.listdir(build_dir) if f.startswith("fit_adam") and f.endswith((".so", ".pyd")))
spec = importlib.util.spec_from_file_location("fit_adam", os.path.join(build_dir, built))
fit_adam = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_adam)
print(f"compiled the extension in {time.perf_counter() - t0:.1f} s")

n, steps = 10_000, 500
rng = np.random.default_rng(0)
a = np.geomspace(1.0, 1e4, n)                      # curvatures over four decades
target = rng.standard_normal(n)
p_cy, m, v, g, losses_cy = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(steps)
t0 = time.perf_counter()
assert fit_adam.fit(p_cy, a, target, m, v, g, 0.01, steps, losses_cy) == 0
t_cy = time.perf_counter() - t0

p_py = np.zeros(n)
opt = etakit.Adam([p_py], lr=0.01)
losses_py = np.zeros(steps)
t0 = time.perf_counter()
for k in range(steps):
    diff = p_py - target
    losses_py[k] = 0.5 * np.sum(a * diff * diff)
    opt.step([a * diff])
t_py = time.perf_counter() - t0
np.testing.assert_array_equal(p_cy, p_py)                 # the same bits
np.testing.assert_allclose(losses_cy, losses_py, rtol=1e-12)
print(f"{steps} steps: the Cython loop {t_cy * 1e3:.1f} ms, the Python loop with etakit.Adam {t_py * 1e3:.1f} ms")

fig, ax = plt.subplots(figsize=(7, 3.8))
ax.semilogy(losses_py, lw=3, color="0.7", label="Python loop, etakit.Adam")
ax.semilogy(losses_cy, lw=1, color="C2", label="Cython loop, cykernels.adam_f64")
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.set_title("Cython: the same bits, no Python per step")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
