"""The command line never shows a traceback: a bad argument is one line on stderr and exit status 2.
`etakit bench` takes exactly python -m etakit.bench's arguments; its progress goes to stderr, its rows
to stdout, once."""
import subprocess
import sys

import pytest

from etakit import bench
from etakit.__main__ import main


def run_main(argv, capsys):
    """main(argv) -> (status, stdout, stderr), with argparse's SystemExit taken as a status."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err, prog, match):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"{prog}: error: "), err
    assert match in lines[-1], err
    # our own errors are exactly one line; argparse's come after its usage lines
    assert len(lines) == 1 or lines[0].startswith("usage:"), err


@pytest.mark.parametrize("args,match", [
    (["cosine(0.1, 10)", "--steps", "-5"], "argument --steps: must be between 1 and 10,000,000, got -5"),
    (["cosine(0.1, 10)", "--steps", "0"], "argument --steps: must be between 1 and 10,000,000, got 0"),
    (["cosine(0.1, 10)", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["cosine(0.1, 10)", "-o", "/nonexistent/x.png"], "the folder /nonexistent does not exist"),
    (["cosine(0.1, 10)", "-o", "x.foo"], "unsupported image format '.foo'; use one of"),
    (["cosine(0.1, 10)", "-o", "noext"], "no file extension"),
    (["cosine(0.1, 999999999999999999999)"], "total_steps must be an integer <= 2**62"),
    (["cosine(0.1, 10000000000000)"], "too many to show; pass --steps N"),
    (["multistep(0.1, [0] * 30000000)"], "got list * int (at column 16)"),
    (["cosine('a' * 1000000000, 10)"], "got str * int (at column 8)"),
    (["1/0 * cosine(0.1,10)"], "division by zero (at column 1)"),
    (["2 * " * 10000 + "cosine(0.1, 10)"], "too long"),
    (["cosine(0.1, 10)" + " * 2" * 150], "nested too deeply"),
    (["cosine(0.1, 10)", "--title", r"$\foo$", "-o", "{tmp}/t.png"], "cannot write"),
])
def test_schedule_errors_are_one_line(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(["schedule"] + [a.format(tmp=tmp_path) for a in args], capsys)
    assert rc == 2
    assert_one_error_line(err, "etakit schedule", match)
    assert not list(tmp_path.iterdir())


def test_schedule_steps_is_honoured(capsys):
    rc, out, err = run_main(["schedule", "cosine(0.1, 10)", "--steps", "3"], capsys)
    assert rc == 0 and "steps 0..2:" in out and not err


@pytest.mark.parametrize("args,match", [
    (["--sizes", "0"], "argument --sizes: must be an element count between 1 and 10,000,000,000, got 0"),
    (["--sizes", "1e30"], "argument --sizes: must be an element count"),
    (["--sizes", "12.5"], "argument --sizes: must be an element count"),
    (["--sizes", "nan"], "argument --sizes: must be an element count"),
    (["--sizes", "abc"], "argument --sizes: invalid number: 'abc'"),
    (["--repeats", "0"], "argument --repeats: must be an integer >= 1, got 0"),
    (["--threads", "-1"], "argument --threads: must be an integer >= 1, got -1"),
    (["--optimizers", "Foo"], "argument --optimizers: invalid choice: 'Foo'"),
    (["--quick", "--bogus"], "unrecognized arguments: --bogus"),
    (["--progress", "--no-progress"], "not allowed with argument"),
])
def test_bench_errors_are_argparse_errors(args, match, capsys):
    rc, out, err = run_main(["bench"] + args, capsys)
    assert rc == 2 and not out
    assert_one_error_line(err, "etakit bench", match)


@pytest.mark.parametrize("args,match", [
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--auto", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--auto", "--out", "{file}"], "not a folder"),
    (["--auto", "--state-dtype", "int8"], "--state-dtype applies to the AdamW path"),
    (["--state-dtype", "int4"], "argument --state-dtype: invalid choice"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--out", "{file}"], "not a folder"),
    (["--out", "{file}/sub"], "cannot create or write a folder there"),
])
def test_demo_errors_are_one_line(args, match, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    rc, out, err = run_main(["demo", "--quick"] + [a.format(file=f) for a in args], capsys)
    assert rc == 2
    assert_one_error_line(err, "etakit demo", match)


def test_bench_takes_what_python_m_etakit_bench_takes(capsys):
    # used to fail: "unrecognized arguments: --quick"; and --help showed etakit's help
    rc, out, err = run_main(["bench", "--help"], capsys)
    assert rc == 0 and out.startswith("usage: etakit bench")
    for flag in ("--quick", "--optimizers", "--sizes", "--repeats", "--threads", "--no-torch", "--no-mixed",
                 "--markdown", "--targets", "--progress"):
        assert flag in out
    rc, out, err = run_main(["bench", "--quick", "--sizes", "1000", "--optimizers", "SGD", "--no-torch",
                             "--repeats", "1"], capsys)
    assert rc == 0 and not err
    assert [line.split()[0] for line in out.splitlines() if line.startswith("SGD")] == ["SGD"]


def test_bench_rows_once_progress_on_stderr(capsys):
    tiny = ["--quick", "--sizes", "1000", "2000", "--optimizers", "SGD", "--no-torch", "--repeats", "1"]
    rows = bench.main(tiny + ["--progress"])
    out, err = capsys.readouterr()
    assert len(rows) == 2
    assert len([line for line in out.splitlines() if line.startswith("SGD")]) == 2
    assert "SGD, 1 tensor of 2k" in err and "SGD  " not in err     # the bar, not the rows
    bench.main(tiny)                      # not a terminal, no --progress: quiet
    out, err = capsys.readouterr()
    assert err == "" and len([line for line in out.splitlines() if line.startswith("SGD")]) == 2


def fake_run_case(case, repeats, min_time, with_torch=True):
    return {"optimizer": case.name, "tensors": len(case.sizes), "elements": case.elements, "us_per_step": 1.0,
            "gb_per_s": 50.0, "probe_gb_per_s": 50.0, "frac_probe": 1.0, "x_numpy": 9.0, "x_torch": None,
            "torch_fused": None, "numpy_us": 9.0, "torch_us": None}


class FakeCase:
    def __init__(self, name, sizes):
        self.name, self.sizes, self.elements = name, sizes, sum(sizes)


def test_bench_targets_show_progress(monkeypatch, capsys):
    # used to be silent for ~20 s
    monkeypatch.setattr(bench, "run_case", fake_run_case)
    monkeypatch.setattr(bench, "Case", FakeCase)
    results = bench.main(["--targets", "--progress"])
    out, err = capsys.readouterr()
    assert all(ok for _, _, ok in results) and out.count("PASS") == 4
    for label in ("Adam, 1 tensor of 50M", "Adam, 200 tensors of 18M in all", "Adam, 1 tensor of 1k"):
        assert label in err


def test_progress_without_tqdm_is_one_line_per_case(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(bench, "run_case", fake_run_case)
    monkeypatch.setattr(bench, "Case", FakeCase)
    bench.main(["--targets", "--progress"])
    err = capsys.readouterr().err
    assert err.splitlines() == ["[1/3] Adam, 1 tensor of 50M", "[2/3] Adam, 200 tensors of 18M in all",
                                "[3/3] Adam, 1 tensor of 1k"]


@pytest.mark.parametrize("argv", [
    ["schedule", "cosine(0.1, 10)", "-o", "/nonexistent/x.png"],
    ["schedule", "cosine(0.1, 10)", "--steps", "-5"],
    ["bench", "--quick", "--sizes", "-3"],
    ["demo", "--out", "/dev/null"],
])
def test_console_exits_2_without_traceback(argv):
    r = subprocess.run([sys.executable, "-m", "etakit"] + argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"etakit {argv[0]}: error: ")


def test_bench_mixed_for_each_optimizer_and_no_numpy(monkeypatch, capsys):
    # the 200-tensor case for every listed rule (--mixed-all), and without the numpy contender
    rows = bench.main(["--quick", "--sizes", "1000", "--optimizers", "SGD", "DoG", "--no-torch", "--repeats", "1",
                       "--mixed-all", "--no-numpy"])
    out, err = capsys.readouterr()
    assert [(r["optimizer"], r["tensors"]) for r in rows] == [("SGD", 1), ("DoG", 1), ("SGD", 200), ("DoG", 200)]
    assert all(r["x_numpy"] is None for r in rows)
    assert [line.split()[-2] for line in out.splitlines() if line.startswith("DoG")] == ["-", "-"]
