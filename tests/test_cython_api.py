"""Another Cython extension cimports etakit's kernels (etakit.get_include()) and calls one nogil."""
import os
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
    from etakit.cykernels cimport adam_f32, etk_adam_hp

    def adam(float[::1] p, float[::1] g, float[::1] m, float[::1] v, long step, double lr):
        cdef etk_adam_hp hp
        cdef int st
        hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay = lr, 0.9, 0.999, 1e-8, 0.0
        hp.amsgrad = hp.maximize = hp.decoupled_weight_decay = 0
        with nogil:
            st = adam_f32(&p[0], &g[0], &m[0], &v[0], NULL, p.shape[0], &hp, step)
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


def test_a_cython_extension_calls_a_kernel(tmp_path):
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
    rng = np.random.default_rng(0)
    p = rng.standard_normal(1001).astype(np.float32)
    q = p.copy()
    m, v, rm, rv = (np.zeros_like(p) for _ in range(4))
    for step in range(1, 11):
        g = rng.standard_normal(p.size).astype(np.float32)
        assert user_ext.adam(p, g, m, v, step, 1e-2) == 0
        reference.adam_step(q, g, rm, rv, step=step, lr=1e-2)
    np.testing.assert_array_equal(p, q)
    assert user_ext.adam(p, g, m, v, 0, 1e-2) != 0   # step 0 is refused, as the C API documents
