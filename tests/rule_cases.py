"""The option combinations every rule is tested with, in one table.

Each rule's list covers its options; the last entry of a list is the richest
combination (the thread/SIMD identity tests use it).  Learning rates are set
so that 100 steps on the tests' small problems stay finite.  Adding a rule
means adding its entry here; every generic test then covers it.
"""
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
    "Adafactor": [
        dict(),
        dict(lr=0.05, weight_decay=0.1),
        dict(beta2_decay=-0.5, eps=(1e-6, 1e-3)),
        dict(lr=0.05, eps=(None, 0.1), d=2.0),
        dict(beta2_decay=0.0, eps=(0.0, 0.0)),
        dict(lr=0.02, maximize=True),
        dict(lr=0.03, beta2_decay=-0.6, eps=(1e-5, 1e-2), d=1.25, weight_decay=0.05, maximize=True),
    ],
}

# rules whose update is a sign: float32 trajectories may differ by a whole step where
# an argument of the sign is within rounding of zero
SIGN_RULES = {"Lion"}

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
