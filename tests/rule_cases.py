"""The option combinations every rule is tested with, in one table.

Each rule's list covers its options; the last entry of a list is the richest
combination (the thread/SIMD identity tests use it).  Learning rates are set
so that 100 steps on the tests' small problems stay finite.  Adding a rule
means adding its entry here; every generic test then covers it.
"""
import contextlib
import importlib

import etakit

CASES = {
    "SGD": [
        dict(lr=0.05),
        dict(lr=0.05, weight_decay=1e-2),
        dict(lr=0.02, momentum=0.9),
        dict(lr=0.02, momentum=0.9, dampening=0.3, weight_decay=1e-3),
        dict(lr=0.02, momentum=0.9, nesterov=True),
        dict(lr=0.05, maximize=True),
        dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=1e-2, maximize=True),
    ],
    "Adam": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, amsgrad=True),
        dict(lr=3e-3, betas=(0.0, 0.0)),
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True, maximize=True),
    ],
    "AdamW": [
        dict(),
        dict(lr=1e-2, weight_decay=0.0, maximize=True),
        dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
    ],
    "RMSprop": [
        dict(),
        dict(lr=1e-3, centered=True),
        dict(lr=1e-3, momentum=0.9),
        dict(lr=1e-3, alpha=0.5, eps=1e-4, maximize=True),
        dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-2),
    ],
    "Adagrad": [
        dict(),
        dict(lr=0.1, initial_accumulator_value=0.1, eps=1e-6, maximize=True),
        dict(lr=0.1, lr_decay=1e-2, weight_decay=1e-2),
    ],
    "Lion": [
        dict(lr=1e-3),
        dict(lr=1e-3, betas=(0.5, 0.9)),
        dict(lr=1e-3, weight_decay=0.1),
        dict(lr=1e-3, weight_decay=1e-2, weight_decouple=False),
        dict(lr=1e-3, weight_decay=1e-2, fixed_decay=True),
        dict(lr=1e-3, betas=(0.95, 0.98), weight_decay=0.5, maximize=True),
    ],
    "Adadelta": [
        dict(),
        dict(lr=0.5, weight_decay=1e-2),
        dict(rho=0.5, eps=1e-4, maximize=True),
        dict(rho=0.0),
        dict(rho=1.0),
        dict(lr=0.3, rho=0.95, eps=1e-3, weight_decay=0.1, maximize=True),
    ],
    "ASGD": [
        dict(),
        dict(lr=0.05, t0=10.0),
        dict(lr=0.05, lambd=0.1, alpha=1.0, t0=0.0),
        dict(lr=0.02, weight_decay=1e-2, maximize=True),
        dict(lr=0.05, lambd=1e-2, alpha=-0.2, t0=-3.5, weight_decay=1e-2),
        dict(lr=0.05, lambd=0.5, alpha=0.9, t0=10.0, weight_decay=0.1, maximize=True),
    ],
    "Rprop": [
        dict(),
        dict(lr=1e-3, etas=(0.3, 1.5)),
        dict(lr=0.05, step_sizes=(1e-3, 0.1), maximize=True),
        dict(lr=0.05, step_sizes=(0.2, 0.1)),
        dict(lr=0.02, etas=(0.6, 1.1), step_sizes=(1e-4, 2.0), maximize=True),
    ],
}

# rules whose update is a sign: float32 trajectories may differ by a whole step where
# an argument of the sign is within rounding of zero
SIGN_RULES = {"Lion"}

# references that keep per-parameter scalars in torch's default dtype (ASGD's eta and mu), where etakit keeps
# float64: float64 comparisons with them run with torch's default dtype set to float64 (reference_dtype)
SCALARS_IN_DEFAULT_DTYPE = {"ASGD"}

PARAMS = [(kind, i) for kind, hps in CASES.items() for i in range(len(hps))]
RICHEST = [(kind, hps[-1]) for kind, hps in CASES.items()]


def reference_class(kind):
    """The reference implementation of optimizer ``kind`` (a class), or None when not installed."""
    path = etakit.OPTIMIZERS[kind].reference_impl or f"torch.optim.{kind}"
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


@contextlib.contextmanager
def reference_dtype(kind, float64):
    """While comparing ``kind`` in float64: torch's default dtype float64 if the reference keeps scalars in it.

    Restored on exit.  (With float32 there, ASGD's eta and mu are rounded to float32 each step, which moves
    a float64 trajectory by ~1e-8 relative: beyond what float64 comparisons allow.)"""
    if not float64 or kind not in SCALARS_IN_DEFAULT_DTYPE:
        yield
        return
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
