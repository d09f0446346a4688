"""What every rule gets from the C rule table, checked for every rule: each
hyperparameter's range and type are enforced with a clear error naming it,
before anything is written, at construction, in a group, and when changed
between steps; schedules only where the table allows them; unknown group
keys are reported."""
import math

import numpy as np
import pytest

import etakit
from conftest import ready, shape_of
from etakit._step import RuleSpec
from rule_cases import CASES


def _fields():
    for kind, cls in etakit.OPTIMIZERS.items():
        spec = RuleSpec.of(cls)
        for f in spec.fields:
            if spec.labels[f["name"]] in cls._implied:
                continue
            yield kind, spec, f


FIELDS = list(_fields())


def _bad_values(f, spec):
    """(value, exception) pairs just outside the field's range, and of the wrong type."""
    if spec.labels[f["name"]] in spec.choices:      # a name standing for a C integer: anything else is refused
        return [("nope", ValueError), (1.5, ValueError), (int(f["hi"]) + 1, ValueError), ([], ValueError)]
    if f["kind"] == "flag":
        return [(2, TypeError), ("yes", TypeError), (0.5, TypeError)]
    if f["kind"] == "int":
        return [(1.5, TypeError), (True, TypeError)] + ([(int(f["lo"]) - 1, ValueError)] if f["lo"] > -2**31 else [])
    out = [(float("nan"), ValueError), ("fast", TypeError), (True, TypeError)]
    lo, hi = f["lo"], f["hi"]
    if math.isfinite(lo):
        out.append((lo if f["lo_open"] else lo - 0.5 * max(1.0, abs(lo)), ValueError))
    if math.isfinite(hi):
        out.append((hi if f["hi_open"] else hi + 0.5 * max(1.0, abs(hi)), ValueError))
    elif f["hi_open"]:           # a range closed at +inf (a limit that may be off) takes inf
        out.append((float("inf"), ValueError))
    return out


def _with(group, spec, field, value):
    """``group`` with the key of C field ``field`` set to ``value`` (inside its tuple if it has one)."""
    key = spec.labels[field]
    if "[" in key:
        key, j = key[:-1].split("[")
        t = list(group[key])
        t[int(j)] = value
        return key, tuple(t)
    return key, value


@pytest.mark.parametrize("kind,spec,f", FIELDS, ids=[f"{k}.{f['name']}" for k, _, f in FIELDS])
def test_out_of_range_and_wrong_type_are_refused_everywhere(kind, spec, f):
    cls = etakit.OPTIMIZERS[kind]
    base = dict(CASES[kind][-1])
    one, three = shape_of(kind, 1), shape_of(kind, 3)
    defaults = {**cls([np.zeros(one)]).defaults, **base}
    label = spec.labels[f["name"]]
    pattern = label.replace("[", r"\[").replace("]", r"\]")
    for value, exc in _bad_values(f, spec):
        key, v = _with(defaults, spec, f["name"], value)
        with pytest.raises(exc, match=pattern):
            cls([np.zeros(three)], **{**base, key: v})
        with pytest.raises(exc, match=pattern):
            cls([{"params": [np.zeros(three)], key: v}], **base)
        # changed between steps: refused at the next step, nothing written
        w = np.ones(three)
        opt = ready(cls([w], **base))
        opt.step([np.full(three, 0.5)])
        before, sd = w.copy(), opt.state_dict()
        old = opt.param_groups[0][key]
        opt.param_groups[0][key] = v
        with pytest.raises(exc, match=pattern):
            opt.step([np.full(three, 0.5)])
        assert w.tobytes() == before.tobytes()
        for name, arr in opt.state_dict()["state"][0].items():
            np.testing.assert_array_equal(arr, sd["state"][0][name])
        opt.param_groups[0][key] = old
        opt.step([np.full(three, 0.5)])


@pytest.mark.parametrize("kind", list(etakit.OPTIMIZERS))
def test_schedules_only_where_the_table_allows(kind):
    cls = etakit.OPTIMIZERS[kind]
    spec = RuleSpec.of(cls)
    three = shape_of(kind, 3)
    defaults = {**cls([np.zeros(shape_of(kind, 1))]).defaults, **CASES[kind][-1]}
    for f in spec.fields:
        if f["kind"] != "real" or spec.labels[f["name"]] in cls._implied:
            continue
        value = defaults[spec.labels[f["name"]].split("[")[0]]
        plain = value[int(spec.labels[f["name"]][-2])] if "[" in spec.labels[f["name"]] else value
        if plain is None:       # an optional field left at None (DoG's init_eta): any value in range will do
            plain = 1.0
        # built-in schedules are rates (>= 0): a field that may be negative gets a Python callable
        sched = etakit.schedules.constant(plain) if plain >= 0 else (lambda k, plain=plain: plain)
        key, v = _with(defaults, spec, f["name"], sched)
        if f["schedulable"]:
            w, w2 = np.ones(three), np.ones(three)
            a = ready(cls([w], **{**CASES[kind][-1], key: v}))
            b = ready(cls([w2], **CASES[kind][-1]))
            for _ in range(3):
                a.step([np.full(three, 0.5)])
                b.step([np.full(three, 0.5)])
            assert w.tobytes() == w2.tobytes(), f"a constant schedule of {key} changes the result"
        else:
            with pytest.raises(TypeError, match="cannot follow a schedule"):
                cls([np.zeros(three)], **{**CASES[kind][-1], key: v})


@pytest.mark.parametrize("kind", list(etakit.OPTIMIZERS))
def test_unknown_group_key_is_reported(kind):
    cls = etakit.OPTIMIZERS[kind]
    two = shape_of(kind, 2)
    with pytest.warns(UserWarning, match="'lrr'.*a typo"):
        cls([{"params": [np.zeros(two)], "lrr": 0.1}])
    opt = ready(cls([np.zeros(two)]))
    opt.step([np.ones(two)])
    opt.param_groups[0]["lrr"] = 0.1
    with pytest.warns(UserWarning, match="'lrr'"):
        opt.step([np.ones(two)])


@pytest.mark.parametrize("kind", list(etakit.OPTIMIZERS))
def test_every_rule_is_documented_and_has_a_reference(kind):
    cls = etakit.OPTIMIZERS[kind]
    assert "Examples" in cls.__doc__ and "Parameters" in cls.__doc__
    # per parameter, or (rules with per-group scalars) over every group at once
    assert hasattr(etakit.reference, f"{cls.rule}_step") or hasattr(etakit.reference, f"{cls.rule}_groups")
