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
    "NAdam": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, momentum_decay=0.0),
        dict(lr=1e-2, momentum_decay=0.5),
        dict(lr=3e-3, betas=(0.0, 0.0)),
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-2, maximize=True),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, momentum_decay=1e-2,
             decoupled_weight_decay=True, maximize=True),
    ],
    "RAdam": [
        dict(),                                  # rectified from step 6 on
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, betas=(0.9, 0.5)),         # rho_inf = 3: never rectified
        dict(lr=3e-3, betas=(0.0, 0.0)),
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-2, maximize=True),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    ],
    "Adamax": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=3e-3, betas=(0.0, 0.0)),
        dict(lr=1e-2, eps=1e-3, maximize=True),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, maximize=True),
    ],
    "Adan": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, weight_decay=0.1, weight_decouple=True),
        dict(lr=1e-2, max_grad_norm=1.0),
        dict(lr=1e-2, betas=(0.9, 0.9, 0.999), eps=1e-6, maximize=True),
        # the clip acts on the large tensors of the bit-exact and thread tests, not on the small ones
        # the reference is compared with (see test_reference_impls for why)
        dict(lr=1e-2, betas=(0.5, 0.8, 0.9), weight_decay=0.1, max_grad_norm=50.0, maximize=True),
    ],
    "ADOPT": [
        dict(),
        dict(lr=1e-2, clip_lambda=None),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, weight_decay=0.1, weight_decouple=True),
        dict(lr=1e-2, weight_decay=0.1, weight_decouple=True, fixed_decay=True),
        dict(lr=1e-2, betas=(0.5, 0.99), eps=1e-4, clip_lambda=None, maximize=True),
        dict(lr=1e-2, betas=(0.8, 0.999), eps=1e-4, weight_decay=1e-2, maximize=True),
    ],
    "AdEMAMix": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, weight_decay=0.1, weight_decouple=True),
        dict(lr=1e-2, weight_decay=0.1, weight_decouple=True, fixed_decay=True),
        dict(lr=1e-2, alpha=2.0, t_alpha_beta3=50.0),
        dict(lr=1e-2, betas=(0.9, 0.99, 0.999), alpha=0.0, eps=1e-6, maximize=True),
        dict(lr=1e-2, betas=(0.8, 0.99, 0.999), alpha=3.0, t_alpha_beta3=40.0, weight_decay=1e-2, maximize=True),
    ],
    "LAMB": [
        dict(lr=1e-2),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-8),
        dict(lr=1e-2, weight_decay=0.1),
        dict(lr=1e-2, weight_decay=0.1, fixed_decay=True),
        dict(lr=1e-2, weight_decay=1e-2, weight_decouple=False),
        dict(lr=1e-2, grad_averaging=False),
        dict(lr=1e-2, adam=True, weight_decay=0.1),
        dict(lr=1e-2, pre_norm=True),
        dict(lr=1e-2, pre_norm=True, max_grad_norm=0.0),
        dict(lr=1e-2, pre_norm=True, max_grad_norm=50.0, eps=0.0),
        dict(lr=1e-2, rectify=True),
        dict(lr=1e-2, rectify=True, degenerated_to_sgd=True),
        dict(lr=1e-2, rectify=True, n_sma_threshold=8, weight_decay=0.1),
        dict(lr=1e-2, rectify=True, weight_decay=1e-2, weight_decouple=False),
        dict(lr=1e-2, rectify=True, degenerated_to_sgd=True, adam=True),
        dict(lr=1e-2, adam_debias=True),
        dict(lr=1e-2, rectify=True, adam_debias=True),
        dict(lr=1e-2, maximize=True),
        dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, rectify=True, degenerated_to_sgd=True, pre_norm=True,
             max_grad_norm=0.5, grad_averaging=False, eps=1e-8, adam_debias=True, maximize=True),
    ],
    "LARS": [
        dict(lr=1e-2),
        dict(lr=1e-2, momentum=0.0),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, dampening=0.3),
        dict(lr=1e-2, nesterov=True),
        dict(lr=1e-2, trust_coefficient=0.1, weight_decay=1e-3, momentum=0.0),
        dict(lr=1e-2, momentum=0.5, maximize=True),
        dict(lr=1e-2, momentum=0.8, dampening=0.1, nesterov=True, weight_decay=1e-2, trust_coefficient=0.02,
             maximize=True),
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
    "Adafactor": [
        dict(),
        dict(lr=0.05, weight_decay=0.1),
        dict(beta2_decay=-0.5, eps=(1e-6, 1e-3)),
        dict(lr=0.05, eps=(None, 0.1), d=2.0),
        dict(beta2_decay=0.0, eps=(0.0, 0.0)),
        dict(lr=0.02, maximize=True),
        dict(lr=0.03, beta2_decay=-0.6, eps=(1e-5, 1e-2), d=1.25, weight_decay=0.05, maximize=True),
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
    # no layer_wise here: the reference (dog.DoG) has no such argument; LDoG is its layer-wise form
    "DoG": [
        dict(),
        dict(reps_rel=1e-4),
        dict(weight_decay=1e-2),
        dict(eps=0.0),
        dict(init_eta=1e-3),
        dict(init_eta=1e-2, weight_decay=1e-2, eps=1e-6),
        dict(lr=0.5),
        dict(reps_rel=1e-3, lr=0.8, weight_decay=1e-2, eps=1e-6),
    ],
    "LDoG": [
        dict(),
        dict(reps_rel=1e-4, weight_decay=1e-2),
        dict(eps=0.0),
        dict(init_eta=1e-3),
        dict(lr=0.5),
        dict(reps_rel=1e-3, lr=0.8, weight_decay=1e-2, eps=1e-6),
    ],
    # the generic tests step in train mode (conftest.ready); tests/test_schedulefree.py switches modes
    "ScheduleFreeAdamW": [
        dict(),
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, warmup_steps=10),
        dict(lr=1e-2, r=1.0),
        dict(lr=1e-2, weight_lr_power=0.0),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6),
        dict(lr=1e-2, betas=(1.0, 0.0)),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=20, r=0.5, weight_lr_power=1.5),
    ],
    "ScheduleFreeSGD": [
        dict(),
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.5),
        dict(lr=0.1, weight_decay=1e-2),
        dict(lr=0.1, warmup_steps=10),
        dict(lr=0.1, r=1.0, weight_lr_power=0.0),
        dict(lr=0.1, momentum=0.8, weight_decay=0.1, warmup_steps=20, r=0.5, weight_lr_power=1.5),
    ],
    "ScheduleFreeRAdam": [
        dict(),                                         # silent for the first 4 steps
        dict(lr=1e-2, silent_sgd_phase=False),          # SGD steps for the first 4
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-2, betas=(0.9, 0.5)),                # rho_inf = 3: never rectified, never moves
        dict(lr=1e-2, betas=(0.9, 0.5), silent_sgd_phase=False),   # ... always SGD
        dict(lr=1e-2, weight_lr_power=0.0),             # weight 0^0 = 1 in the silent phase
        dict(lr=1e-2, r=1.0),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, r=0.5, weight_lr_power=1.5,
             silent_sgd_phase=False),
    ],
    "Prodigy": [
        dict(),
        dict(betas=(0.5, 0.9)),
        dict(betas=(0.0, 0.99)),                   # no exp_avg: the step is along g
        dict(beta3=0.9),
        dict(weight_decay=0.1),                     # decoupled
        dict(weight_decay=1e-2, decouple=False),
        dict(use_bias_correction=True),
        dict(safeguard_warmup=True),
        dict(d0=1e-4, d_coef=0.5),
        dict(growth_rate=1.02),
        dict(slice_p=3),
        dict(lr=0.5, eps=1e-6, slice_p=11, weight_decay=1e-2, decouple=False),
        dict(lr=0.5, betas=(0.8, 0.99), beta3=0.95, eps=1e-6, weight_decay=0.05, decouple=False,
             use_bias_correction=True, safeguard_warmup=True, d0=1e-5, d_coef=2.0, growth_rate=1.05, slice_p=3),
    ],
    "DAdaptAdam": [
        dict(),
        dict(betas=(0.5, 0.9)),
        dict(eps=1e-6),
        dict(weight_decay=1e-2),                    # coupled
        dict(weight_decay=0.1, decouple=True),
        dict(use_bias_correction=True),
        dict(d0=1e-4, growth_rate=1.02),
        dict(lr=0.5, log_every=10),
        dict(lr=0.5, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, decouple=True, use_bias_correction=True,
             d0=1e-5, growth_rate=1.05, log_every=5),
    ],
    "DAdaptSGD": [
        dict(),
        dict(momentum=0.9),
        dict(weight_decay=1e-2),
        dict(d0=1e-2, growth_rate=1.02),
        dict(lr=0.5, momentum=0.5, weight_decay=1e-2, d0=1e-5, growth_rate=1.1, log_every=3),
    ],
    "DAdaptAdaGrad": [
        dict(),
        dict(d0=1e-2),                              # d0 large enough that the steps are not tiny
        dict(d0=1e-2, momentum=0.5),
        dict(d0=1e-2, weight_decay=1e-2),
        dict(d0=1e-2, eps=1e-4, growth_rate=1.02),
        dict(lr=0.5, momentum=0.9, weight_decay=1e-2, eps=1e-4, d0=1e-2, growth_rate=1.1, log_every=2),
    ],
}

# References whose checkpoints cannot move to etakit and back, and why (trajectories still match).
_DOG_LAYOUT = ("the authors' dog package keeps x0 in its parameter groups (a list 'init_buffer' per group) and a "
               "'_first_step' entry among its per-parameter state; etakit keeps x0 per parameter (the state "
               "'init_buffer') and tells a first step by G == 0")
STATE_LAYOUT_DIFFERS = {"DoG": _DOG_LAYOUT, "LDoG": _DOG_LAYOUT}

# Rules whose groups share hyperparameters the reference reads from one group (the step size d is
# adapted over every group): a second group differs from the first in these (a function of the
# first group's), not in lr.  DAdaptSGD's groups differ in lr only, which may be 0.
SECOND_GROUP = {
    "Prodigy": lambda hp: dict(eps=1e-6, weight_decay=hp.get("weight_decay", 0.0) + 1e-2, d0=2e-6,
                               slice_p=hp.get("slice_p", 1) + 1, safeguard_warmup=not hp.get("safeguard_warmup")),
    "DAdaptAdam": lambda hp: dict(eps=1e-6, weight_decay=hp.get("weight_decay", 0.0) + 1e-2, layer_scale=0.5),
    "DAdaptSGD": lambda hp: dict(lr=0.0),
    "DAdaptAdaGrad": lambda hp: dict(eps=1e-3, weight_decay=hp.get("weight_decay", 0.0) + 1e-2),
}
# Their references form the dot products and sums behind d in float32 for float32 parameters
# (torch.dot, .sum()), etakit in double: float32 trajectories differ by that rounding of d and stay
# within the generic float32 tolerances (the worst, Prodigy with betas[0] = 0, uses about a third).
# The key and value of a group hyperparameter one group can set on its own (lr, except for the rules above).
ONE_GROUP_KEY = {"Prodigy": ("eps", 1e-3), "DAdaptAdam": ("layer_scale", 0.5), "DAdaptSGD": ("lr", 0.0),
                 "DAdaptAdaGrad": ("eps", 1e-3)}

# rules whose update is a sign: float32 trajectories may differ by a whole step where
# an argument of the sign is within rounding of zero
SIGN_RULES = {"Lion"}


def float32_in_reference(kind, hp):
    """Whether the reference implementation rounds to float32 inside a float64 run with these options.

    pytorch_optimizer forms a global gradient norm in float32 (its
    get_global_gradient_norm casts with ``.float()``) even for float64
    parameters: LAMB's ``pre_norm`` and Adan's ``max_grad_norm``; etakit forms
    it in double.  Where the clipping acts, float64 trajectories then agree to
    ~1e-7 relative, not 1e-9 (tests/test_lamb_lars.py and
    tests/test_adan_adopt_ademamix.py show tight agreement once the reference
    forms that norm in float64)."""
    if kind == "LAMB":
        return bool(hp.get("pre_norm")) and hp.get("max_grad_norm", 1.0) != 0.0
    return kind == "Adan" and hp.get("max_grad_norm", 0.0) > 0


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



@contextlib.contextmanager
def torch_default_dtype(torch, dtype):
    """torch's default dtype set to ``dtype`` inside the block (restored after).

    torch.optim keeps some per-parameter scalar state in its default dtype
    (NAdam's ``mu_product``: float32 unless changed), etakit keeps it in
    float64; float64 runs are compared with a float64 reference."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
