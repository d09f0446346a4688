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
    "Muon": [
        dict(lr=0.02),
        dict(lr=0.02, nesterov=False),
        dict(lr=0.02, momentum=0.3, weight_decay=0.0),
        dict(lr=0.02, momentum=0.0, nesterov=False),
        dict(lr=0.02, adjust_lr_fn="original"),
        dict(lr=0.01, adjust_lr_fn="match_rms_adamw"),
        dict(lr=0.02, ns_steps=0),
        dict(lr=0.02, ns_coefficients=(1.5, -0.5, 0.0), ns_steps=8, eps=1e-5),
        dict(lr=0.01, weight_decay=0.2, momentum=0.9, nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315),
             eps=1e-6, ns_steps=6, adjust_lr_fn="match_rms_adamw"),
    ],
}

# rules whose update is a sign: float32 trajectories may differ by a whole step where
# an argument of the sign is within rounding of zero
SIGN_RULES = {"Lion"}

PARAMS = [(kind, i) for kind, hps in CASES.items() for i in range(len(hps))]
RICHEST = [(kind, hps[-1]) for kind, hps in CASES.items()]


def _torch_muon_in_full_precision(monkeypatch):
    # torch.optim.Muon orthogonalises in bfloat16 (grad.bfloat16()), etakit.Muon in the parameter's dtype
    import torch
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())


# References that round on purpose where etakit does not: the generic tests switch that rounding off
# (inside the test only) to compare the same mathematics at their usual tolerances; the rule's own
# tests compare against the stock reference at a tolerance suited to the rounding.
ROUNDING_OFF = {"Muon": _torch_muon_in_full_precision}


def reference_class(kind, monkeypatch=None):
    """The reference implementation of optimizer ``kind`` (a class), or None when not installed.

    With ``monkeypatch``, a rounding the reference does on purpose (ROUNDING_OFF) is switched off
    for the rest of the test."""
    cls = _reference_class(kind)
    if cls is not None and monkeypatch is not None and kind in ROUNDING_OFF:
        ROUNDING_OFF[kind](monkeypatch)
    return cls


def _reference_class(kind):
    """The reference implementation of optimizer ``kind`` (a class), or None when not installed."""
    path = etakit.OPTIMIZERS[kind].reference_impl or f"torch.optim.{kind}"
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None
