"""Property tests: any shape, any valid hyperparameters, agree with the reference."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import etakit
from conftest import ReferenceOptimizer

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
dtypes = st.sampled_from([np.float32, np.float64])
unit = st.floats(0.0, 0.999)
rate = st.floats(0.0, 0.5)
small = st.floats(0.0, 1e-1)

HPS = {
    "SGD": st.fixed_dictionaries(dict(lr=rate, momentum=unit, weight_decay=small, maximize=st.booleans()),
                                 optional=dict(dampening=st.floats(0.0, 1.0))),
    "Adam": st.fixed_dictionaries(dict(lr=rate, betas=st.tuples(unit, unit), eps=st.floats(1e-12, 1.0),
                                       weight_decay=small, amsgrad=st.booleans(), maximize=st.booleans())),
    "AdamW": st.fixed_dictionaries(dict(lr=rate, betas=st.tuples(unit, unit), weight_decay=small,
                                        amsgrad=st.booleans())),
    "RMSprop": st.fixed_dictionaries(dict(lr=rate, alpha=st.floats(0.0, 1.0), eps=st.floats(1e-10, 1.0),
                                          weight_decay=small, momentum=unit, centered=st.booleans(),
                                          maximize=st.booleans())),
    "Adagrad": st.fixed_dictionaries(dict(lr=rate, lr_decay=small, weight_decay=small,
                                          initial_accumulator_value=small, eps=st.floats(1e-12, 1e-2))),
}


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(sorted(HPS)))
    hp = draw(HPS[kind])
    dtype = draw(dtypes)
    shp = draw(st.lists(shapes, min_size=1, max_size=4))
    return kind, hp, dtype, shp, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_any_shape_and_hyperparameters_match_reference(problem):
    kind, hp, dtype, shp, seed = problem
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shp]
    theirs = [p.copy() for p in params]
    opt = getattr(etakit, kind)(params, **hp)
    ref = ReferenceOptimizer(kind, theirs, [(range(len(params)), hp)])
    with np.errstate(all="ignore"):   # extreme draws may overflow; both sides must agree anyway
        for _ in range(5):
            grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
            opt.step(grads)
            ref.step(grads)
    for a, b in zip(params, theirs):
        np.testing.assert_array_equal(a, b)
