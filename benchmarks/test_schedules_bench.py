"""pytest-benchmark: schedule values() against numpy and a Python loop, and
the cost a schedule adds to a small optimizer step (see schedules.py)."""
import numpy as np
import pytest

import etakit
from etakit import schedules as S

from schedules import numpy_warmup_cosine, python_warmup_cosine

N = 1_000_000


@pytest.mark.parametrize("who", ["etakit", "numpy", "python"])
def test_values_1m(benchmark, who):
    benchmark.group = f"warmup_cosine over {N:,} steps"
    s = S.warmup_cosine(3e-4, 500, N)
    fn = {"etakit": lambda: s.values(N),
          "numpy": lambda: numpy_warmup_cosine(N, 3e-4, 500, N),
          "python": lambda: [python_warmup_cosine(k, 3e-4, 500, N) for k in range(N)]}[who]
    benchmark(fn)


@pytest.mark.parametrize("lr", ["constant", "warmup_cosine", "callable"])
def test_scheduled_step(benchmark, lr):
    benchmark.group = "Adam step, 1,000 float32 elements"
    value = {"constant": 1e-3, "warmup_cosine": S.warmup_cosine(1e-3, 100, 10**9), "callable": lambda k: 1e-3}[lr]
    g = [np.ones(1000, dtype=np.float32)]
    opt = etakit.Adam([np.zeros(1000, dtype=np.float32)], lr=value)
    benchmark(opt.step, g)
