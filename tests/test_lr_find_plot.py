"""lr_find's plot shows the raw losses that matter: its loss axis is not set from the smoothed curve."""
import numpy as np
import pytest

from etakit.lr_finder import LRFindResult

pytest.importorskip("matplotlib")

# the README's example: etakit demo's lr_find (MLP on digits, AdamW, 1e-5 .. 10 over 100 steps), seed 0
LOSSES = [2.51, 2.47, 2.58, 2.62, 2.46, 2.55, 2.45, 2.42, 2.43, 2.49, 2.49, 2.54, 2.58, 2.54, 2.56, 2.46, 2.57, 2.57,
          2.47, 2.63, 2.55, 2.47, 2.38, 2.4, 2.5, 2.45, 2.37, 2.42, 2.37, 2.41, 2.29, 2.29, 2.32, 2.3, 2.33, 2.17,
          2.19, 2.23, 2.09, 2.13, 1.99, 1.9, 1.98, 1.79, 1.7, 1.51, 1.56, 1.4, 1.26, 1.04, 0.975, 0.817, 0.742, 0.67,
          0.477, 0.39, 0.421, 0.305, 0.378, 0.264, 0.257, 0.253, 0.521, 0.574, 1.02, 0.671, 0.782, 1.32, 1.26, 1.43,
          1.33, 0.981, 2.34, 0.72, 1.02, 0.609, 1.67, 2.53, 5.03, 7.23, 20.4, 26.7, 15.7, 71.2, 23.6, 20.1, 34.5, 17.9,
          2.51, 1.78, 6.76, 1.98, 3.49, 1.61, 2.04, 2.17, 4.51, 7.26, 3.08, 2.87]
SMOOTHED = [2.51, 2.5, 2.5, 2.51, 2.51, 2.52, 2.52, 2.52, 2.51, 2.5, 2.5, 2.49, 2.49, 2.5, 2.5, 2.5, 2.51, 2.51, 2.51,
            2.52, 2.52, 2.52, 2.52, 2.52, 2.51, 2.51, 2.51, 2.5, 2.5, 2.49, 2.49, 2.48, 2.48, 2.47, 2.46, 2.46, 2.45,
            2.44, 2.43, 2.42, 2.41, 2.4, 2.39, 2.37, 2.36, 2.34, 2.32, 2.29, 2.27, 2.24, 2.21, 2.18, 2.14, 2.1, 2.06,
            2.02, 1.97, 1.93, 1.88, 1.84, 1.8, 1.75, 1.71, 1.67, 1.64, 1.61, 1.59, 1.57, 1.55, 1.54, 1.54, 1.53, 1.53,
            1.52, 1.51, 1.49, 1.48, 1.47, 1.48, 1.5, 1.59, 1.73, 2.07, 2.52, 3.04, 3.53, 4.02, 4.49, 4.87, 5.18, 5.21,
            5.15, 5.09, 5.01, 4.94, 4.88, 4.81, 4.75, 4.71, 4.68]


def result(losses, smoothed, stop="completed"):
    n = len(losses)
    return LRFindResult(np.geomspace(1e-5, 10, n), losses, smoothed, [1.0], stop, {"diverge": 4.0})


def test_readme_example_shows_the_raw_minimum_and_the_descent(tmp_path):
    res = result(LOSSES, SMOOTHED)
    ax = res.plot(path=tmp_path / "lr_find.png")
    lo, hi = ax.get_ylim()
    raw = np.array(LOSSES)
    shown = (raw >= lo) & (raw <= hi)
    # the old axis ran from 1.37 to 2.84 (from the smoothed curve): 42% of raw points, the raw minimum 0.25 among them,
    # were off the plot
    assert lo < raw.min() < 0.5 and hi < 5.0, (lo, hi)
    i_min = int(np.argmin(raw))
    assert shown[: i_min + 10].all()                      # the whole descent and the turn are visible
    assert shown.mean() >= 0.85
    # the divergence spike is not scaled into view but marked on the top edge, one marker per step
    marks = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert len(marks) == 1 and len(marks[0].get_xdata()) == int((raw > hi).sum()) > 0
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000


@pytest.mark.parametrize("losses", [
    [3.0, 2.0, 1.0, 0.5, 0.4, 0.45, 0.6, 1e6],           # one huge final value
    [-1.0, -2.0, -3.0, -2.5, -1.0, 50.0],                # negative losses
    [1.0] * 8,                                           # flat
    [1.0, 0.8, np.nan, np.inf],                          # non-finite tail
])
def test_axis_covers_the_raw_losses_before_the_blow_up(losses):
    raw = np.array(losses, dtype=float)
    sm = np.where(np.isfinite(raw), raw, np.nan)
    ax = result(raw, sm).plot()
    lo, hi = ax.get_ylim()
    assert lo < hi
    finite = raw[np.isfinite(raw)]
    i_min = int(np.argmin(finite))
    assert lo <= finite.min() and hi >= finite[: i_min + 1].max()
    assert hi < 1e3


def test_nothing_finite_leaves_the_axis_alone():
    ax = result([np.nan] * 6, [np.nan] * 6, "non-finite").plot()
    assert np.all(np.isfinite(ax.get_ylim()))
