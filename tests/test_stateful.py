"""A stateful property test: any interleaving of steps, hyperparameter changes,
schedules, new parameter groups, checkpoints, pickling and refused calls
leaves the optimizer exactly where a pure-numpy model of the same sequence
(etakit.reference driven by hand) is, and a refused call changes nothing."""
import pickle

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import etakit
from etakit import reference
from etakit import schedules as S
from rule_cases import CASES

KINDS = ["SGD", "Adam", "RMSprop", "Lion", "Adagrad"]


def _value(v, k):
    return float(v(k)) if callable(v) else v


class OptimizerMachine(RuleBasedStateMachine):
    @initialize(kind=st.sampled_from(KINDS), dtype=st.sampled_from([np.float32, np.float64]),
                seed=st.integers(0, 2**31))
    def setup(self, kind, dtype, seed):
        self.kind, self.dtype = kind, dtype
        self.cls = etakit.OPTIMIZERS[kind]
        self.rng = np.random.default_rng(seed)
        shapes = [(3,), (2, 2), (0,), (5,)]
        self.params = [self.rng.standard_normal(s).astype(dtype) for s in shapes]
        self.model = [p.copy() for p in self.params]
        base = dict(CASES[kind][-1])
        self.base = base
        self.group_hp = [dict(base), dict(base, lr=base.get("lr", 1e-3) * 0.5)]
        self.group_idx = [[0, 1], [2, 3]]
        self.opt = self.cls([{"params": [self.params[i] for i in idx], **hp}
                             for idx, hp in zip(self.group_idx, self.group_hp)], **base)
        self.defaults = self.opt.defaults
        self.state = [{} for _ in self.params]
        self.steps = [0] * len(self.params)
        self.k = 0

    # ---- what the model does -------------------------------------------------
    def _grads(self):
        return [self.rng.standard_normal(p.shape).astype(self.dtype) for p in self.model]

    def _model_step(self, grads):
        for idx, hp in zip(self.group_idx, self.group_hp):
            full = {key: (tuple(_value(x, self.k) for x in v) if isinstance(v, tuple) else _value(v, self.k))
                    for key, v in {**self.defaults, **hp}.items()}
            for i in idx:
                self.steps[i] += 1
                reference.step_rule(self.cls.rule, self.model[i], grads[i], self.state[i], step=self.steps[i], **full)
        self.k += 1

    # ---- rules ---------------------------------------------------------------
    @rule()
    def step(self):
        grads = self._grads()
        with np.errstate(all="ignore"):
            self.opt.step(grads)
            self._model_step(grads)

    @rule(which=st.sampled_from(["shape", "dtype", "none", "alias", "count", "not a list"]))
    def refused_step(self, which):
        grads = self._grads()
        if which == "shape":
            grads[1] = np.zeros(5, self.dtype)
        elif which == "dtype":
            grads[0] = grads[0].astype(np.float16)
        elif which == "none":
            grads[-1] = None
        elif which == "alias":
            grads[0] = self.params[0]
        elif which == "count":
            grads = grads[:-1]
        else:
            grads = dict(enumerate(grads))
        try:
            self.opt.step(grads)
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"a bad gradient ({which}) was accepted")

    @rule(g=st.integers(0, 1), factor=st.floats(0.25, 2.0))
    def change_lr(self, g, factor):
        lr = self.group_hp[g].get("lr", self.defaults["lr"])
        if callable(lr):
            lr = float(lr(self.k))
        self.group_hp[g]["lr"] = self.opt.param_groups[g]["lr"] = lr * factor

    @rule(g=st.integers(0, 1), total=st.integers(1, 40))
    def schedule_lr(self, g, total):
        s = S.warmup(S.cosine(self.base.get("lr", 1e-3), total), 3)
        self.group_hp[g]["lr"] = self.opt.param_groups[g]["lr"] = s

    @rule(g=st.integers(0, 1))
    def refused_hyperparameter(self, g):
        old = self.opt.param_groups[g]["lr"]
        self.opt.param_groups[g]["lr"] = -1.0
        try:
            self.opt.step(self._grads())
        except ValueError:
            pass
        else:
            raise AssertionError("a negative lr was accepted")
        finally:
            self.opt.param_groups[g]["lr"] = old

    @precondition(lambda self: len(self.group_idx) < 4)
    @rule()
    def add_group(self):
        p = self.rng.standard_normal(4).astype(self.dtype)
        hp = dict(self.base, lr=self.base.get("lr", 1e-3) * 2)
        self.opt.add_param_group({"params": [p], **hp})
        self.params.append(p)
        self.model.append(p.copy())
        self.state.append({})
        self.steps.append(0)
        self.group_idx.append([len(self.params) - 1])
        self.group_hp.append(hp)

    @rule()
    def checkpoint_into_a_new_optimizer(self):
        sd = self.opt.state_dict()
        fresh = self.cls([{"params": [self.params[i] for i in idx], **hp}
                          for idx, hp in zip(self.group_idx, self.group_hp)], **self.base)
        fresh.load_state_dict(sd)
        self.opt = fresh

    @rule()
    def pickle_round_trip(self):
        self.opt = pickle.loads(pickle.dumps(self.opt))
        self.params = [p for g in self.opt.param_groups for p in g["params"]]

    # ---- after every action ----------------------------------------------------
    @invariant()
    def parameters_and_state_equal_the_model(self):
        for i, (p, q) in enumerate(zip(self.params, self.model)):
            np.testing.assert_array_equal(p, q, err_msg=f"param {i}")
        sd = self.opt.state_dict()
        assert sd["step_count"] == self.k
        for i, st_ in enumerate(self.state):
            for name, arr in st_.items():
                np.testing.assert_array_equal(sd["state"][i][name], arr, err_msg=f"state {name} of param {i}")
            if self.steps[i]:
                assert sd["state"][i]["step"] == self.steps[i]


OptimizerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestOptimizerMachine = OptimizerMachine.TestCase
