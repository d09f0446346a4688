"""The Examples sections of the public docstrings run and show true output."""
import doctest

import pytest

import etakit
from etakit import bench, demo, lr_finder, optim, optimize, plateau, reference, schedules


@pytest.mark.parametrize("module", [etakit, optim, reference, bench, schedules, plateau, lr_finder, demo, optimize], ids=lambda m: m.__name__)
def test_docstring_examples(module, threads):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
