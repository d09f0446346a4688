"""The Examples sections of the public docstrings run and show true output."""
import doctest
import importlib

import pytest

MODULES = ["etakit", "etakit.optim", "etakit.reference", "etakit.bench", "etakit.schedules", "etakit.plateau",
           "etakit.lr_finder", "etakit.demo", "etakit.optimize", "etakit.torch", "etakit.__main__",
           "etakit.checkpoint", "etakit.loop", "etakit.errors", "etakit.cykernels", "etakit.distributed",
           "etakit.sweeps"]


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


API_PAGES = {"etakit": "optimizers lr_find loop minimize sweep checkpoints config errors", "etakit.torch": "torch",
             "etakit.schedules": "schedules", "etakit.reference": "reference", "etakit.demo": "tools",
             "etakit.bench": "tools", "etakit.cykernels": "cython", "etakit.sweeps": "sweep",
             "etakit.distributed": "distributed"}


@pytest.mark.parametrize("name", sorted(API_PAGES))
def test_every_public_name_has_its_place_in_the_api_reference(name):
    """The API pages list every name of the module's __all__ (so a new public name cannot be left out)."""
    import pathlib
    import re

    if name == "etakit.torch":
        pytest.importorskip("torch")
    if name == "etakit.distributed":
        pytest.importorskip("mpi4py", reason="etakit.distributed needs the 'mpi' extra (mpi4py)")
    module = importlib.import_module(name)
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api"
    text = "\n".join((docs / f"{page}.rst").read_text() for page in API_PAGES[name].split())
    listed = set(re.findall(r"^\s+([A-Za-z_]\w*)\s*$", text, re.M))            # autosummary entries
    listed |= set(re.findall(r"^\.\. (?:data|autofunction|autoclass):: (?:[\w.]+\.)?(\w+)", text, re.M))
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")
                                                  and callable(getattr(module, n))]
    modules_and_versions = {"reference", "schedules", "__version__"}
    missing = sorted(set(public) - modules_and_versions - listed)
    assert not missing, f"{name}: not in docs/api/{API_PAGES[name]}.rst: {missing}"


def test_every_optimizer_documents_and_declares_the_options_it_takes():
    """The keyword-only options of every optimizer (etakit._lowp.KEYS, etakit._passes.KEYS) are those its
    docstring lists, with their defaults, and those OptimizerOptions declares for type checkers."""
    import inspect

    from etakit import _lowp, _passes, optim

    keys = {**_lowp.KEYS, **_passes.KEYS}
    assert list(optim._OPTION_DOCS) == list(keys)
    assert set(optim.OptimizerOptions.__annotations__) == set(keys)
    for name, (_, default, _) in optim._OPTION_DOCS.items():
        assert eval(default) == keys[name], name
    for cls in optim.OPTIMIZERS.values():
        assert list(inspect.signature(cls).parameters)[-len(keys):] == list(keys), cls.__name__
        for name, (kind, default, _) in optim._OPTION_DOCS.items():
            assert f"\n    {name} : {kind}, default {default}, keyword-only\n" in cls.__doc__, (cls.__name__, name)


def test_the_package_imports_without_docstrings():
    """python -OO drops docstrings: the modules that build docstrings at import still import."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = "import etakit, etakit.optim, etakit.torch; assert etakit.AdamW.__doc__ is None"
    r = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_the_torch_drop_ins_are_declared_for_type_checkers():
    """etakit.torch makes its drop-ins in a loop; the module declares each name's type for type checkers."""
    torch_module = pytest.importorskip("etakit.torch")
    from etakit import optim

    declared = {n: t for n, t in torch_module.__annotations__.items() if n in optim.OPTIMIZERS}
    assert sorted(declared) == sorted(optim.OPTIMIZERS)
    for name, t in declared.items():
        modes = issubclass(optim.OPTIMIZERS[name], optim._ScheduleFree)
        assert t == ("type[_ScheduleFreeDropIn]" if modes else "type[_RuleDropIn]"), name
