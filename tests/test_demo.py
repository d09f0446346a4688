"""``etakit demo --quick`` end to end: it trains, reaches a real accuracy, writes its pictures."""
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_quick_runs_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "etakit", "demo", "--quick", "--out", str(tmp_path), "--seed", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    acc = float(re.search(r"held-out accuracy: ([\d.]+)%", r.stdout).group(1))
    assert acc >= 90.0, r.stdout
    assert re.search(r"suggested learning rate [\d.e-]+", r.stdout)
    assert re.search(r"optimizer step: [\d.]+ us per step", r.stdout)
    for name in ("lr_find.png", "schedule.png", "training.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_demo_run_returns_what_it_measured(tmp_path):
    from etakit import demo
    r = demo.run(out=str(tmp_path), quick=True, progress=False, log=lambda *a: None)
    assert 0.9 <= r["accuracy"] <= 1.0
    assert r["suggested_lr"] == r["lr_find"].suggestion
    assert len(r["history"]["test_acc"]) == 10 and r["us_per_step"] > 0


def test_demo_auto_trains_without_a_learning_rate(tmp_path):
    # learning-rate-free: Prodigy with no learning rate reaches the lr_find path's accuracy (>= 90% in 10 epochs)
    r = subprocess.run([sys.executable, "-m", "etakit", "demo", "--auto", "--quick", "--out", str(tmp_path),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "Prodigy, no learning rate" in r.stdout and "lr_find" not in r.stdout
    acc = float(re.search(r"held-out accuracy: ([\d.]+)%", r.stdout).group(1))
    assert acc >= 90.0, r.stdout
    assert re.search(r"step size d: [\d.e-]+ after the first step, [\d.e-]+ at the end", r.stdout)
    for name in ("step_size.png", "training.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert not (tmp_path / "lr_find.png").exists()


def test_demo_run_auto_returns_prodigys_step_sizes(tmp_path):
    from etakit import demo
    r = demo.run(out=str(tmp_path), quick=True, progress=False, log=lambda *a: None, auto=True)
    assert 0.9 <= r["accuracy"] <= 1.0
    assert r["suggested_lr"] is None and r["lr_find"] is None
    d = r["history"]["lr"]
    assert len(d) == 10 and d[0] > 1e-6 and all(b >= a for a, b in zip(d, d[1:]))    # d only grows


def test_demo_with_8bit_optimizer_state_trains_as_well(tmp_path):
    from etakit import demo
    quiet = dict(out=str(tmp_path), quick=True, progress=False, log=lambda *a: None)
    base = demo.run(**quiet)
    r = demo.run(state_dtype="int8", **quiet)
    assert r["suggested_lr"] == base["suggested_lr"]       # lr_find sweeps with float32 state either way
    assert abs(r["accuracy"] - base["accuracy"]) <= 0.02
    assert r["history"]["train_loss"] != base["history"]["train_loss"]    # the state format did change
