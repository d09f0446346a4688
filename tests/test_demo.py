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
