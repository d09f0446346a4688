"""Another Cython extension cimports etakit's kernels (etakit.get_include()) and calls them nogil,
on the same engine as etakit itself (one flush-to-zero setting, one SIMD choice)."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import etakit
from etakit import reference

pytest.importorskip("Cython")

SRC = textwrap.dedent('''
    # cython: language_level=3
    from etakit.cykernels cimport adam_f32, etk_adam_hp, lion_f64, etk_lion_hp, sgd_f32, etk_sgd_hp

    def adam(float[::1] p, float[::1] g, float[::1] m, float[::1] v, long step, double lr):
        cdef etk_adam_hp hp
        cdef void *state[3]
        cdef int st
        hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay = lr, 0.9, 0.999, 1e-8, 0.0
        hp.amsgrad = hp.maximize = hp.decoupled_weight_decay = 0
        state[0], state[1], state[2] = &m[0], &v[0], NULL
        with nogil:
            st = adam_f32(&p[0], &g[0], state, p.shape[0], &hp, step)
        return st

    def lion(double[::1] p, double[::1] g, double[::1] m, double lr):
        cdef etk_lion_hp hp
        cdef void *state[1]
        hp.lr, hp.beta1, hp.beta2, hp.weight_decay = lr, 0.9, 0.99, 0.0
        hp.weight_decouple, hp.fixed_decay, hp.maximize = 1, 0, 0
        cdef int st
        state[0] = &m[0]
        with nogil:
            st = lion_f64(&p[0], &g[0], state, p.shape[0], &hp, 1)
        return st

    def sgd(float[::1] p, float[::1] g, double lr):
        cdef etk_sgd_hp hp
        cdef int st
        hp.lr, hp.momentum, hp.dampening, hp.weight_decay, hp.nesterov, hp.maximize = lr, 0, 0, 0, 0, 0
        with nogil:
            st = sgd_f32(&p[0], &g[0], NULL, p.shape[0], &hp, 1)
        return st
''')

SETUP = textwrap.dedent('''
    import os, sys, etakit
    from setuptools import Extension, setup
    from Cython.Build import cythonize
    pkg_parent = os.path.dirname(os.path.dirname(etakit.__file__))   # where etakit/cykernels.pxd lives
    ext = Extension("user_ext", ["user_ext.pyx"], include_dirs=[etakit.get_include()])
    setup(ext_modules=cythonize([ext], include_path=[etakit.get_include(), pkg_parent], quiet=True),
          script_args=["build_ext", "--inplace", "-q"])
''')


@pytest.fixture(scope="module")
def user_ext(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("user_ext")
    assert os.path.exists(os.path.join(etakit.get_include(), "etakit.h"))
    (tmp_path / "user_ext.pyx").write_text(SRC)
    (tmp_path / "build.py").write_text(SETUP)
    r = subprocess.run([sys.executable, "build.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        import user_ext
    finally:
        sys.path.remove(str(tmp_path))
    return user_ext


def test_a_cython_extension_calls_kernels(user_ext):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(1001).astype(np.float32)
    q = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    ref_state = {}
    for step in range(1, 11):
        g = rng.standard_normal(p.size).astype(np.float32)
        assert user_ext.adam(p, g, m, v, step, 1e-2) == 0
        reference.adam_step(q, g, ref_state, step=step, lr=1e-2)
    np.testing.assert_array_equal(p, q)
    assert user_ext.adam(p, g, m, v, 0, 1e-2) != 0   # step 0 is refused, as the C API documents
    p, g, m = np.array([1.0, -2.0]), np.array([0.5, -3.0]), np.zeros(2)
    assert user_ext.lion(p, g, m, 0.1) == 0
    np.testing.assert_array_equal(p, [0.9, -1.9])


def test_cimported_kernels_run_on_etakit_s_own_engine(user_ext):
    # one flush-to-zero setting for the process: 2e-38 - 1.5e-38 is a float32 denormal
    old = etakit._core.get_flush_denormal()
    try:
        for flush, expect in ((False, np.float32(2e-38) - np.float32(1.5e-38)), (True, 0.0)):
            etakit.set_flush_denormal(flush)
            p, g = np.array([2e-38], np.float32), np.array([1.5e-38], np.float32)
            assert user_ext.sgd(p, g, 1.0) == 0
            assert p[0] == expect
    finally:
        etakit.set_flush_denormal(old)
    # and the compiled engine is etakit._core's, not a copy linked into etakit.cykernels
    from etakit import cykernels
    assert cykernels.rule_ids() == {name: i for i, name in enumerate(etakit._core.rule_names())}
    nm = shutil.which("nm")
    if nm:
        out = subprocess.run([nm, "-D", "--defined-only", cykernels.__file__], capture_output=True, text=True).stdout
        assert not [line for line in out.splitlines() if " etk_" in line]
