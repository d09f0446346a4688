"""pytest-benchmark suite: one optimizer step, etakit against its bandwidth
probe, in-place numpy and torch.optim, grouped so the report compares them
side by side.

Run: pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=median,ops
(``python -m etakit.bench`` prints the same comparison as one table.)
"""
import pytest

from etakit import bench

CONTENDERS = ["etakit", "probe", "numpy", "torch"]


def _step(case, who):
    fn = getattr(case, f"{who}_step")()
    if who == "torch":
        if fn is None:
            pytest.skip("torch not installed")
        fn = fn[0]
    return fn


@pytest.mark.parametrize("who", CONTENDERS)
@pytest.mark.parametrize("n", [1_000, 100_000, 10_000_000])
@pytest.mark.parametrize("name", list(bench.RULES))
def test_step(benchmark, name, n, who):
    benchmark.group = f"{name} float32 n={n}"
    benchmark(_step(bench.Case(name, [n]), who))


@pytest.mark.parametrize("who", CONTENDERS)
def test_adam_200_mixed_tensors(benchmark, who):
    benchmark.group = "Adam float32, 200 tensors, 18M elements"
    benchmark(_step(bench.Case("Adam", bench.mixed_sizes(18_000_000)), who))
