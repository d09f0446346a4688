"""Facts about the build that users rely on."""
import os

import etakit
from etakit import _core


def test_simd_variant_is_chosen_from_what_the_cpu_supports():
    available = _core.simd_available()
    assert "baseline" in available
    assert etakit.simd_variant() in available
    if not os.environ.get("ETAKIT_SIMD"):   # the best available, unless asked otherwise
        best = next(v for v in ["avx512vbmi", "avx512", "avx2", "baseline"] if v in available)
        assert etakit.simd_variant() == best


def test_threshold_knob_round_trips():
    default = _core.parallel_min()
    _core.set_parallel_min(1)
    assert _core.parallel_min() == 1
    _core.set_parallel_min(0)
    assert _core.parallel_min() == default
