"""The reference (and so the kernels) follow torch.optim's trajectories.

Skipped without torch.  In float64 the two differ only by floating-point
rounding (PyTorch evaluates a few expressions in another order)."""
import numpy as np
import pytest

import etakit

torch = pytest.importorskip("torch")

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.02, momentum=0.9, dampening=0.2, weight_decay=1e-2)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=1e-2, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-2)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.2)),
]


@pytest.mark.parametrize("kind,hp", CASES)
def test_trajectory_matches_torch_optim(kind, hp):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (1,)]
    params = [rng.standard_normal(s) for s in shapes]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = getattr(etakit, kind)(params, **hp)
    topt = getattr(torch.optim, kind)(tparams, **hp)
    for _ in range(100):
        # gradients of a smooth loss, plus noise: the trajectory matters, not just one step
        grads = [2 * p + 0.1 * rng.standard_normal(p.shape) for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(grads)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-9, atol=1e-12)
    # the state carries PyTorch's names
    tstate = topt.state_dict()["state"].get(0, {})   # plain SGD keeps none
    mine = opt.state_dict()["state"][0]
    for name, value in tstate.items():
        if name == "step":
            assert mine["step"] == int(value)
        elif value is not None:
            np.testing.assert_allclose(mine[name], value.numpy(), rtol=1e-9, atol=1e-12)
