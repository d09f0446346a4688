"""Build of the etakit extension: the C kernels in csrc/ plus the Cython shim.

OpenMP is used when the compiler accepts it (probed here); otherwise the build
is serial and says so.  The build is portable: SIMD variants are compiled side
by side and chosen at run time.  ETAKIT_NATIVE=1 opts in to -march=native.
"""
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd"]


def _compiler_accepts(compiler, flags):
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags, omp = ["/O2", "/fp:precise"], ["/openmp"]
        else:
            flags, omp = list(BASE_FLAGS), ["-fopenmp"]
            if os.environ.get("ETAKIT_NATIVE") == "1":
                flags.append("-march=native")
        has_omp = _compiler_accepts(self.compiler, omp)
        if not has_omp:
            warnings.warn("etakit: the C compiler does not support OpenMP; building single-threaded kernels")
            print("etakit: building WITHOUT OpenMP (single-threaded)", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = flags + (omp if has_omp else [])
            ext.extra_link_args = omp if has_omp else []
        super().build_extensions()


C_SOURCES = ["csrc/engine.c", "csrc/kernels.c", "csrc/schedule.c"]
DEPENDS = ["csrc/etakit.h", "csrc/etk_internal.h", "csrc/kernels_body.h", "csrc/kernels_variant.h"]

core = Extension(
    "etakit._core",
    sources=["src/etakit/_core.pyx"] + C_SOURCES,
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    depends=DEPENDS,
)
# the cimportable kernels (etakit.cykernels): the same C sources, no numpy
cykernels = Extension("etakit.cykernels", sources=["src/etakit/cykernels.pyx"] + C_SOURCES, include_dirs=["csrc"],
                      depends=DEPENDS)


class BuildPy(build_py):
    """Ship the public header next to the Cython declarations (etakit.get_include())."""

    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "etakit", "include")
        os.makedirs(dest, exist_ok=True)
        shutil.copy("csrc/etakit.h", dest)
        shutil.copy("src/etakit/cykernels.pxd", dest)


setup(ext_modules=cythonize([core, cykernels], language_level=3),
      cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
