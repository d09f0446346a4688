"""The Examples sections of the public docstrings run and show true output."""
import doctest
import importlib

import pytest

MODULES = ["etakit", "etakit.optim", "etakit.reference", "etakit.bench", "etakit.schedules", "etakit.plateau",
           "etakit.lr_finder", "etakit.demo", "etakit.optimize", "etakit.torch", "etakit.__main__",
           "etakit.checkpoint", "etakit.loop", "etakit.distributed", "etakit.sweeps"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, threads):
    if name == "etakit.torch":
        pytest.importorskip("torch")
    if name == "etakit.distributed":
        pytest.importorskip("mpi4py", reason="etakit.distributed needs the 'mpi' extra (mpi4py)")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
