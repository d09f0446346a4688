"""The command line and the plots."""
import subprocess
import sys

import numpy as np
import pytest

from etakit import schedules as S
from etakit.__main__ import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_schedule_command_plots_expressions(tmp_path, capsys):
    out = tmp_path / "sched.png"
    rc = main(["schedule", "warmup_cosine(peak_lr=3e-4, warmup_steps=500, total_steps=10000)",
               "0.5 * step(0.1, 100)", "-o", str(out), "--steps", "2000"])
    assert rc == 0
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "max 0.0003 at step 500" in text and f"wrote {out}" in text


@pytest.mark.parametrize("expr", ["__import__('os').system('echo hacked')", "cosine(0.1, 0)", "nope(1)"])
def test_schedule_command_refuses_bad_expressions(expr, tmp_path, capsys):
    assert main(["schedule", expr, "-o", str(tmp_path / "x.png")]) == 2
    assert "etakit schedule:" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "etakit", "schedule", "cosine(0.1, 10)", "--steps", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "cosine(lr=0.1, total_steps=10, min_lr=0.0)" in r.stdout


def test_schedule_plot_draws_the_values(tmp_path):
    s = S.one_cycle(0.1, 300)
    ax = s.plot(300, path=tmp_path / "one_cycle.png")
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_ydata(), s.values(300))
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "learning rate"
    assert (tmp_path / "one_cycle.png").read_bytes()[:8] == PNG
