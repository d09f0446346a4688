"""README.md runs as written: every ```python block, and every command it shows (cheaply: with
--help or tiny options where the real run takes minutes)."""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.S | re.M)


def blocks(lang):
    out = []
    for m in FENCE.finditer(TEXT):
        if m.group(2) == lang:
            indent = len(m.group(1))
            body = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
            out.append((TEXT[:m.start()].count("\n") + 1, body))
    return out


PYTHON = blocks("python")


def test_readme_has_the_blocks_we_expect():
    assert len(PYTHON) >= 4 and blocks("bash") and blocks("cython")


@pytest.mark.parametrize("line,code", PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_python_block_runs_as_written(line, code, tmp_path, monkeypatch):
    if re.search(r"^import torch|^from torch|etakit\.torch", code, re.M):
        pytest.importorskip("torch")
    if "plot(" in code:
        pytest.importorskip("matplotlib")
    if "mpi4py" in code:
        pytest.importorskip("mpi4py", reason="needs the 'mpi' extra")
    if "etakit.sweep(" in code:
        pytest.importorskip("distributed", reason="needs the 'sweep' extra")
    monkeypatch.chdir(tmp_path)                     # blocks write their files (ckpt.npz, lr_find.png) here
    t0 = time.perf_counter()
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    assert time.perf_counter() - t0 < 5.0, "README examples should stay quick"


# ---- commands ----------------------------------------------------------------

def bash_commands():
    """Commands of the ```bash blocks: continuation lines joined, comments dropped, split at &&."""
    cmds = []
    for _, body in blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", body)
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                cmds += [c.strip() for c in line.split("&&")]
    return cmds


def inline_commands():
    """Commands quoted in the prose: `python -m ...`, `etakit ...`, `make ...`, `pytest ...`."""
    found = re.findall(r"`((?:python -m |python benchmarks/|etakit |make |pytest )[^`]*)`", TEXT)
    return [c for c in found if "..." not in c]      # `etakit schedule EXPR... -o FILE` is a synopsis


TINY_BENCH = ["--quick", "--sizes", "1000", "--optimizers", "SGD", "--no-torch", "--repeats", "1", "--no-mixed"]
# not run here: installing, the test suite itself, and the C builds (CI runs those)
NOT_RUN = {
    "pip install \".[demo]\"": "installs the package",
    "pip install \".[test]\"": "installs the package",
    "python -m pytest": "is this test suite",
    "pytest benchmarks/ --benchmark-group-by=group": "the benchmark suite (minutes)",
    "make -C csrc test": "the C tests (CI runs them)",
    "make -C csrc": "the C libraries (CI builds them)",
    "make -C examples/c run": "the C example (CI runs it)",
    "torchrun --nproc-per-node 2 examples/ddp_zero.py": "two torch processes (tests/test_distributed_torch.py runs "
                                                        "DDP and ZeRO on two; the README block runs it alone)",
}
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def cheap(cmd, tmp_path):
    """The command as argv, made cheap where the real run takes long; None if not run here."""
    if cmd in NOT_RUN:
        return None
    argv = shlex.split(cmd)
    if argv[:2] == ["python", "-m"] or argv[:1] == ["python"]:
        argv[0] = sys.executable
    elif argv[0] == "mpiexec":                       # mpiexec -n 2 python examples/x.py: run as written
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            return None
        if MPIEXEC is None:
            return None
        return [MPIEXEC] + [sys.executable if a == "python" else str(README.parent / a) if a.startswith("examples/")
                            else a for a in argv[1:]]
    elif argv[0] == "etakit":
        # the console script when installed (it must take what python -m etakit takes), else the module
        argv = [shutil.which("etakit")] + argv[1:] if shutil.which("etakit") and "bench" in argv else \
            [sys.executable, "-m", "etakit"] + argv[1:]
    else:
        raise AssertionError(f"README command {cmd!r} is not covered by tests/test_readme.py")
    rest = argv[argv.index("etakit.bench") + 1:] if "etakit.bench" in argv else \
        argv[argv.index("bench") + 1:] if "bench" in argv else None
    slow = "demo" in argv[-2:] or "benchmarks/" in cmd or (rest is not None and "--targets" in rest) or \
        argv[3:4] == ["sweep"]                      # a cluster and trainings: seconds
    if slow or argv[-1] == "schedule":
        return argv + ["--help"]                    # minutes of work: check the command and its flags exist
    if rest is not None:
        return argv + TINY_BENCH
    if "-o" in argv:                                # write the picture somewhere harmless
        argv[argv.index("-o") + 1] = str(tmp_path / "out.png")
    return argv


COMMANDS = sorted(set(bash_commands() + inline_commands()))


def test_readme_commands_are_all_known():
    assert any("etakit schedule" in c for c in COMMANDS) and any("--quick" in c for c in COMMANDS)
    for cmd in COMMANDS:
        cheap(cmd, pathlib.Path("/tmp"))            # raises for a command this file does not know


def run_in_process(argv, capsys, monkeypatch):
    """Run a `python -m etakit...`, `etakit ...` or `python benchmarks/x.py` argv here (no interpreter start-up)."""
    import runpy

    from etakit.__main__ import main

    if argv[0] == sys.executable and argv[1:3] == ["-m", "etakit.bench"]:
        from etakit import bench
        call = lambda: bench.main(argv[3:])  # noqa: E731
    elif argv[0] == sys.executable and argv[1:3] == ["-m", "etakit"]:
        call = lambda: main(argv[3:])  # noqa: E731
    elif argv[0] == sys.executable and argv[1].startswith("benchmarks/"):
        monkeypatch.setattr(sys, "argv", argv[1:])
        monkeypatch.syspath_prepend(str(README.parent / "benchmarks"))
        call = lambda: runpy.run_path(str(README.parent / argv[1]), run_name="__main__")  # noqa: E731
    else:
        raise AssertionError(argv)
    try:
        rc = call()
        rc = rc if isinstance(rc, int) else 0
    except SystemExit as e:
        rc = e.code or 0
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_runs(cmd, tmp_path, capsys, monkeypatch):
    argv = cheap(cmd, tmp_path)
    if argv is None:
        pytest.skip(f"{cmd}: {NOT_RUN.get(cmd, 'needs the mpi extra (mpi4py, mpiexec)')}")
    monkeypatch.chdir(README.parent)
    if argv[0] == sys.executable:
        rc, out, err = run_in_process(argv, capsys, monkeypatch)
    else:       # the installed console script: a real process, once per command
        env = dict(os.environ)
        # the etakit this test imports (installed, or the source tree of an editable install)
        import etakit
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(etakit.__file__)) + os.pathsep + env.get("PYTHONPATH", "")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        rc, out, err = r.returncode, r.stdout, r.stderr
    assert rc == 0, f"{cmd}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err
    if argv[-1] == "--help":
        flags = [f for f in shlex.split(cmd) if f.startswith("--")]
        assert all(f in out for f in flags), (cmd, out)
    if "-o" in argv:
        assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_blocks_that_name_an_example_file_are_that_file():
    """A ```python block whose first line is ``# examples/<name>.py...`` is that file, as written."""
    named = [(line, code) for line, code in PYTHON if code.startswith("# examples/")]
    assert len(named) >= 2
    for line, code in named:
        path = README.parent / code.split()[1].rstrip(":")
        assert path.read_text(encoding="utf-8") == code, f"README.md:{line} differs from {path.name}"
