"""etakit.sweep: learning-rate sweeps as Dask tasks; the table, the plot, and `etakit sweep`."""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import etakit
from etakit.__main__ import main as cli


def train(lr, seed, optimizer=etakit.SGD, steps=30):
    """Least squares on a seeded problem: the loss history (diverges above lr ~ 1.2); raises at lr == 0.5."""
    if lr == 0.5:
        raise ValueError("this trial fails on purpose")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((64, 5))
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(64)
    w = np.zeros(5)
    opt = optimizer([w], lr=lr)
    losses = []
    with np.errstate(all="ignore"):
        for _ in range(steps):
            r = X @ w - y
            losses.append(float(0.5 * np.mean(r * r)))
            opt.step([X.T @ r / len(y)])
    return losses


LRS = [1e-3, 1e-2, 0.1, 0.5, 3.0]


def _losses(res):
    return [(r["lr"], r["seed"], "nan" if math.isnan(r["final_loss"]) else r["final_loss"], r["diverged"],
             r["error"]) for r in res.rows]


@pytest.fixture(scope="module")
def serial():
    return etakit.sweep(train, LRS, seeds=[0, 1], client="serial", progress=False)


def test_serial_sweep_records_failures_and_divergence(serial):
    rows = {(r["lr"], r["seed"]): r for r in serial.rows}
    assert len(rows) == 10
    assert all(rows[0.5, s]["error"] == "ValueError: this trial fails on purpose" for s in (0, 1))
    assert all(math.isnan(rows[0.5, s]["final_loss"]) for s in (0, 1))
    assert all(rows[3.0, s]["diverged"] for s in (0, 1)) and not any(rows[lr, 0]["diverged"] for lr in LRS[:3])
    want = {(lr, s): train(lr, s)[-1] for lr in LRS if lr != 0.5 for s in (0, 1)}
    assert all(rows[k]["final_loss"] == v or (math.isnan(v) and math.isnan(rows[k]["final_loss"]))
               for k, v in want.items())
    assert serial.best == 0.1 and serial.wall_time_s > 0


def test_dask_sweep_on_two_workers_equals_serial(serial):
    distributed = pytest.importorskip("distributed", reason="etakit.sweep on Dask needs the 'sweep' extra")
    res = etakit.sweep(train, LRS, seeds=[0, 1], n_workers=2, processes=False, progress=False)
    assert _losses(res) == _losses(serial)
    assert [r["losses"] for r in res.rows] == [r["losses"] for r in serial.rows]
    # a Client of the user's (left open), and optimizer= handed to the training function
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        res = etakit.sweep(train, [1e-2, 0.1], optimizer=etakit.Adam, client=client, progress=False)
        assert client.status == "running"
    assert [r["final_loss"] for r in res.rows] == [train(lr, 0, optimizer=etakit.Adam)[-1] for lr in (1e-2, 0.1)]


def test_lr_find_tasks_and_the_grid_around_their_suggestion():
    def find(seed):
        return 0.02 * (seed + 1)

    res = etakit.sweep(train, seeds=[0, 1, 2], lr_find=find, client="serial", progress=False)
    assert sorted(res.lr_find) == [0.02, 0.04, 0.06]
    assert sorted({r["lr"] for r in res.rows}) == pytest.approx([0.04 * 2.0 ** k for k in range(-3, 4)])
    res = etakit.sweep(train, [0.1], lr_find=0.03, client="serial", progress=False)
    assert res.lr_find == [0.03]

    def broken(seed):
        raise RuntimeError("no")

    with pytest.raises(ValueError, match="no lr_find run gave a suggestion.*RuntimeError: no"):
        etakit.sweep(train, lr_find=broken, client="serial", progress=False)


def test_results_table_csv_and_plot(serial, tmp_path):
    pytest.importorskip("matplotlib")
    extra = etakit.sweep(lambda lr, seed: {"loss": [2.0, lr], "acc": 0.5 + lr}, [0.1, 0.2], client="serial",
                         progress=False)
    assert extra.columns() == ["lr", "seed", "final_loss", "diverged", "time_s", "error", "acc"]
    path = tmp_path / "sweep.csv"
    extra.to_csv(path)
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [(float(r["lr"]), float(r["final_loss"]), float(r["acc"])) for r in rows] == [(0.1, 0.1, 0.6),
                                                                                       (0.2, 0.2, 0.7)]
    assert serial.table().count("\n") == 11 and "ValueError" in serial.table()
    ax = serial.plot(path=tmp_path / "sweep.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "diverged (2)" in labels and "failed (2)" in labels and "best rate: 0.1" in labels
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    marked = etakit.sweep(train, [0.1], lr_find=0.03, client="serial", progress=False).plot()
    assert any("lr_find suggestion: 0.03" in t.get_text() for t in marked.get_legend().get_texts())


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(lrs=[]), ValueError, "lrs is empty"),
    (dict(lrs=[0.1, -1.0]), ValueError, r"lrs\[1\]"),
    (dict(lrs=[float("nan")]), ValueError, r"lrs\[0\]"),
    (dict(lrs="0.1"), TypeError, "sequence"),
    (dict(lrs=None), ValueError, "give lrs"),
    (dict(lrs=[0.1], seeds=[0.5]), TypeError, r"seeds\[0\]"),
    (dict(lrs=[0.1], seeds=[]), ValueError, "seeds is empty"),
    (dict(lrs=[0.1], n_workers=0), ValueError, "n_workers"),
    (dict(lrs=[0.1], threads=0), ValueError, "threads"),
    (dict(lrs=[0.1], diverge=1.0), ValueError, "diverge"),
    (dict(lrs=[0.1], kwargs=[1]), TypeError, "kwargs"),
    (dict(lrs=[0.1], client=3), TypeError, "client"),
    (dict(lrs=[0.1], lr_find="x"), TypeError, "lr_find"),
    (dict(lr_find=float("nan")), ValueError, "give lrs"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        etakit.sweep(train, **{"client": "serial", "progress": False, **kwargs})
    with pytest.raises(TypeError, match="callable"):
        etakit.sweep(None, [0.1])


def test_what_a_training_function_returns_is_checked():
    res = etakit.sweep(lambda lr, seed: {"acc": 1.0}, [0.1], client="serial", progress=False)
    assert "without a 'loss' entry" in res.rows[0]["error"]
    res = etakit.sweep(lambda lr, seed: "low", [0.1], client="serial", progress=False)
    assert res.rows[0]["error"].startswith("TypeError: train_fn must return")
    res = etakit.sweep(lambda lr, seed: [], [0.1], client="serial", progress=False)
    assert "no losses" in res.rows[0]["error"] and math.isnan(res.best)


def test_without_dask_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"etakit\[sweep\]"):
        etakit.sweep(train, [0.1], progress=False)


# ---- the command line ----------------------------------------------------------------
def test_cli_sweep_writes_the_table_and_the_plot(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert cli(["sweep", "--serial", "--lrs", "1e-3", "1e-2", "--epochs", "1", "--hidden", "16", "--out", str(out),
                "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| lr | seed | final_loss |" in text and "best rate" in text
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert [float(r["lr"]) for r in rows] == [1e-3, 1e-2] and all(0 < float(r["test_acc"]) <= 1 for r in rows)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,match", [
    (["--lrs", "0"], "--lrs must be finite and > 0"),
    (["--lrs", "1e-3", "--workers", "0"], "--workers must be >= 1"),
    (["--lrs", "1e-3", "--epochs", "0"], "--epochs must be >= 1"),
    (["--lrs", "1e-3", "--optimizer", "Adamm"], "not an etakit optimizer"),
    ([], "give --lrs, or --lr-find"),
    (["--lrs", "1e-3", "--serial", "--address", "tcp://x:1"], "exclude each other"),
    (["--lrs", "x"], "invalid float value"),
])
def test_cli_errors_are_one_line_and_exit_2(args, match, capsys):
    try:
        rc = cli(["sweep", *args])
    except SystemExit as e:          # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_cli_refuses_an_output_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = subprocess.run([sys.executable, "-m", "etakit", "sweep", "--lrs", "1e-3", "--out", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"etakit sweep: error: --out {f}: not a folder"


def train_on_a_worker(lr, seed):
    return {"loss": train(lr, seed), "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"),
            "pid": os.getpid()}


def test_dask_sweep_on_worker_processes(serial):
    pytest.importorskip("distributed", reason="etakit.sweep on Dask needs the 'sweep' extra")
    res = etakit.sweep(train_on_a_worker, [1e-2, 0.5, 3.0, 0.1], seeds=[1], n_workers=2, processes=True,
                       progress=False)
    assert _losses(res) == [x for x in _losses(serial) if x[0] in (1e-2, 0.5, 3.0, 0.1) and x[1] == 1]
    ran = [r for r in res.rows if not r["error"]]
    assert all(r["extra"]["pid"] != os.getpid() for r in ran)
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 makes numpy loops about 2x slower; etakit's cluster drops it
    assert all(r["extra"]["malloc_trim"] == "unset" for r in ran)


def test_a_progress_bar_on_a_terminal(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    etakit.sweep(train, [1e-2, 0.1], client="serial", progress=True)
    err = capsys.readouterr().err
    assert "sweep" in err and "2/2" in err and "trial" in err
    etakit.sweep(train, [1e-2], client="serial", progress=False)
    assert capsys.readouterr().err == ""
