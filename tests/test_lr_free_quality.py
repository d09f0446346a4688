"""benchmarks/lr_free_quality.py on a tiny case: the harness runs, and a port matches its reference there."""
import importlib.util
import math
import pathlib

import numpy as np
import pytest

PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "lr_free_quality.py"


@pytest.fixture(scope="module")
def lfq():
    spec = importlib.util.spec_from_file_location("lr_free_quality", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quadratic_regret_and_reference_side_by_side(lfq):
    pytest.importorskip("torch")
    pytest.importorskip("prodigyopt")
    p = lfq.quadratic(10, 10, 0.1, steps=60)
    initial, best, best_name, out = lfq.evaluate(p, ["Prodigy"], np.logspace(-3, 0, 4), (1,))
    assert 0 <= best < initial and best_name
    assert math.isfinite(out["Prodigy"][0])
    assert out["Prodigy"][0] == pytest.approx(out["ref:Prodigy"][0], rel=1e-9)
    assert lfq.regret(best, initial, best) == 0 and lfq.regret(initial, initial, best) == 1


def test_divergence_is_inf(lfq):
    p = lfq.quadratic(100, 1, 0, steps=20)
    import etakit
    assert lfq.run_etakit(p, lambda ps: etakit.SGD(ps, lr=1.0), 1) == math.inf      # lr 1 > 2/L
