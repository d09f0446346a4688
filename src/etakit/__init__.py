"""etakit: fused C optimizer kernels and learning-rate tools for numpy.

Examples
--------
>>> import numpy as np, etakit
>>> w = np.zeros(3, dtype=np.float32)
>>> opt = etakit.AdamW([w], lr=1e-2)
>>> opt.step([np.ones(3, dtype=np.float32)])
>>> w
array([-0.01, -0.01, -0.01], dtype=float32)
"""
from __future__ import annotations

import numbers as _numbers

from . import _core, reference, schedules
from .errors import GradientError, GradientTypeError, HyperparameterError, NonFiniteGradientError, StateError
from .optim import OPTIMIZERS, Optimizer
from .optim import *  # noqa: F403  (every optimizer class, by name)
from .checkpoint import load, save
from .lr_finder import LRFindResult, LRFindWarning, lr_find
from .loop import GradientAccumulator, Lookahead, clip_grad_norm_, grad_norm, param_groups_weight_decay
from .optimize import minimize, scipy_method
from .plateau import ReduceLROnPlateau
from .sweeps import SweepResult, sweep

__version__ = "0.2.0"
# (OPTIMIZERS: the names of the optimizer classes, which ruff cannot see are strings)
__all__ = [*OPTIMIZERS, "Optimizer", "OPTIMIZERS", "ReduceLROnPlateau", "lr_find", "LRFindResult",  # noqa: PLE0604
           "LRFindWarning", "minimize", "scipy_method", "sweep", "SweepResult", "clip_grad_norm_", "grad_norm",
           "param_groups_weight_decay", "Lookahead", "GradientAccumulator", "reference", "schedules", "save", "load",
           "GradientError", "GradientTypeError", "HyperparameterError", "NonFiniteGradientError", "StateError",
           "get_include", "get_num_threads", "set_num_threads",
           "set_flush_denormal", "simd_variant", "__version__"]


def get_include() -> str:
    """Directory with ``etakit.h`` and the Cython declarations ``cykernels.pxd``.

    For a C extension: ``include_dirs=[etakit.get_include()]``.  For Cython:
    ``from etakit.cykernels cimport adam_f32, etk_adam_hp`` with the same
    include directory; the functions are resolved at import, nothing to link.

    Returns
    -------
    str
        The directory (in the installed package, or ``csrc/`` of a source tree).

    Examples
    --------
    >>> import os, etakit
    >>> os.path.exists(os.path.join(etakit.get_include(), "etakit.h"))
    True
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.exists(os.path.join(installed, "etakit.h")):
        return installed
    # an editable install: the header is still in the source tree
    return os.path.join(os.path.dirname(os.path.dirname(here)), "csrc")


def get_num_threads() -> int:
    """Number of threads a large step uses (OpenMP's; 1 without OpenMP).

    Follows ``OMP_NUM_THREADS`` at start-up, :func:`set_num_threads`, and
    ``threadpoolctl.threadpool_limits``.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> import etakit
    >>> etakit.get_num_threads() >= 1
    True
    """
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads for large steps (calls ``omp_set_num_threads``).

    Results are bit-identical whatever the thread count.

    Parameters
    ----------
    n : int
        At least 1.

    Examples
    --------
    >>> import etakit
    >>> old = etakit.get_num_threads()
    >>> etakit.set_num_threads(1); etakit.get_num_threads()
    1
    >>> etakit.set_num_threads(old)
    """
    if isinstance(n, bool) or not isinstance(n, _numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(int(n))


def set_flush_denormal(mode: bool) -> bool:
    """Flush denormal numbers to zero inside etakit's kernels (like ``torch.set_flush_denormal``).

    Float32 Adam, RMSprop and Adagrad on near-zero gradients square them into
    denormals, and denormal arithmetic is slow on most CPUs (2x here).  With
    ``mode=True`` such values become 0: results then differ from
    ``etakit.reference`` exactly where a value would have been denormal.  Off
    by default.

    Parameters
    ----------
    mode : bool
        Flush (True) or not (False).

    Returns
    -------
    bool
        True where supported (x86), False elsewhere (no effect).

    Examples
    --------
    >>> import etakit
    >>> etakit.set_flush_denormal(True)
    True
    >>> etakit.set_flush_denormal(False)
    True
    """
    if not isinstance(mode, (bool, int)):
        raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
    return _core.set_flush_denormal(bool(mode))


def simd_variant() -> str:
    """The SIMD variant of the kernels chosen for this CPU ("avx512vbmi", "avx512", "avx2" or "baseline").

    "avx512vbmi" runs the "avx512" element loops with 8-bit state codecs that look
    their tables up with byte permutes instead of gathers.

    Set the environment variable ``ETAKIT_SIMD`` before import to pick another
    supported variant.  All variants give bit-identical results.

    Returns
    -------
    str
        "avx512", "avx2" or "baseline".

    Examples
    --------
    >>> import etakit
    >>> etakit.simd_variant() in ("avx512vbmi", "avx512", "avx2", "baseline")
    True
    """
    return _core.simd_variant()
