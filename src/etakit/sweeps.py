"""Learning-rate sweeps on Dask: one training per rate (and seed), as tasks on a cluster.

Choosing a learning rate by trying several is embarrassingly parallel: each
training is independent.  :func:`sweep` hands one call of the user's training
function per (rate, seed) to Dask's distributed scheduler (a
``dask.distributed.LocalCluster`` on this machine by default; any cluster
through a ``Client`` or a scheduler address), gathers the final losses as they
finish, and returns a :class:`SweepResult`: a table (rate, seed, final loss,
diverged, time, error), the best rate, a CSV writer and a plot of loss
against rate with the ``lr_find`` suggestion marked.  A trial that raises or
diverges is recorded in the table; the sweep goes on.

The training function owns the training (the model, the data, the
optimizer), so one sweep serves any optimizer and loop; ``optimizer=`` and
``kwargs=`` are handed to it.  ``lr_find=`` may be a function of the seed
that runs ``etakit.lr_find``: those runs are Dask tasks too, and without
``lrs`` the sweep's rates are a grid around their median suggestion.

Dask is imported by :func:`sweep` only, when it runs on a cluster
(``pip install "etakit[sweep]"``); ``client="serial"`` runs the same trials
one after another in this process, without Dask.

Examples
--------
>>> import numpy as np, etakit
>>> def train(lr, seed):
...     w = np.ones(4)
...     opt = etakit.SGD([w], lr=lr)
...     losses = []
...     for _ in range(20):
...         losses.append(float(w @ w))
...         opt.step([2 * w])
...     return losses
>>> res = etakit.sweep(train, lrs=[0.01, 0.1, 1.5], client="serial", progress=False)
>>> [(r["lr"], r["diverged"]) for r in res.rows]
[(0.01, False), (0.1, False), (1.5, True)]
>>> res.best
0.1
"""
from __future__ import annotations

import csv
import logging
import math
import numbers
import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import distributed
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from tqdm import tqdm

    from .lr_finder import LRFindResult

__all__ = ["sweep", "SweepResult", "demo_trial", "main"]

COLUMNS = ("lr", "seed", "final_loss", "diverged", "time_s", "error")

# a row of the table: COLUMNS, "losses" (list of float or None) and "extra" (dict of str to number or str)
_Row = dict[str, Any]


# ---- one trial (runs on a worker) -------------------------------------------------
def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _losses_of(out: object) -> tuple[npt.NDArray[np.float64] | None, float, dict[str, Any]]:
    """(history or None, final loss, extra columns) from what a training function returned."""
    extra: dict[str, Any] = {}
    if isinstance(out, dict):
        if "loss" not in out:
            raise TypeError(f"train_fn returned a dict without a 'loss' entry (keys {sorted(map(str, out))})")
        extra = {str(k): v for k, v in out.items() if k != "loss"}
        clash = sorted(k for k in extra if k in COLUMNS)
        if clash:       # an error rather than a silent overwrite of the sweep's own column, or a renamed one
            raise ValueError(f"train_fn's extra result {clash[0]!r} has the name of a column of the sweep's table "
                             f"({', '.join(COLUMNS)}); return it under another name")
        for k, v in extra.items():
            if not isinstance(v, (numbers.Number, str, bool, np.generic)) and v is not None:
                raise TypeError(f"train_fn's extra result {k!r} must be a number or a string (a table column), got "
                                f"{type(v).__name__}")
        extra = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in extra.items()}
        out = out["loss"]
    if isinstance(out, (bool, np.bool_)):
        raise TypeError("train_fn must return the final loss (a number), the losses (a sequence) or a dict with "
                        "'loss'; got a bool")
    if isinstance(out, (numbers.Real, np.floating, np.integer)):
        return None, float(out), extra
    what = "train_fn must return the final loss (a number), the losses (a sequence of numbers) or a dict with 'loss'"
    if out is None or isinstance(out, (str, bytes)):        # numpy would read None as NaN, "0.5" as 0.5
        raise TypeError(f"{what}; got {type(out).__name__}")
    try:
        history = np.asarray(out)
    except (TypeError, ValueError):                          # a ragged sequence
        raise TypeError(f"{what}; got {type(out).__name__}") from None
    if history.dtype.kind not in "iuf":                      # None, strings, complex or bool inside
        raise TypeError(f"{what}; got {type(out).__name__} of {history.dtype} "
                        f"({'complex' if history.dtype.kind == 'c' else 'not all real numbers'})")
    history = history.astype(np.float64).reshape(-1)
    if history.size == 0:
        raise ValueError("train_fn returned no losses (an empty sequence)")
    return history, float(history[-1]), extra


def _diverged(history: npt.NDArray[np.float64] | None, final: float, diverge: float) -> bool:
    """A non-finite loss, or a final loss above ``diverge`` times the first (a positive one)."""
    if not math.isfinite(final):
        return True
    if history is None:
        return False
    if not np.isfinite(history).all():
        return True
    return bool(history[0] > 0 and final > diverge * history[0])


def _trial(train_fn: Callable[..., object], lr: float, seed: int, kwargs: dict[str, Any], threads: int | None,
           diverge: float) -> _Row:
    """One training; never raises: a failure is a row with its error (the sweep goes on)."""
    import etakit

    row: _Row = {"lr": lr, "seed": seed, "final_loss": math.nan, "diverged": False, "time_s": math.nan, "error": "",
           "losses": None, "extra": {}}
    old = etakit.get_num_threads()
    t0 = time.perf_counter()
    try:
        if threads:
            etakit.set_num_threads(threads)
        history, final, extra = _losses_of(train_fn(lr, seed, **kwargs))
        row.update(final_loss=final, diverged=_diverged(history, final, diverge), extra=extra,
                   losses=None if history is None else history.tolist())
    except Exception as e:      # recorded; KeyboardInterrupt and SystemExit still stop the sweep
        row["error"] = _one_line(f"{type(e).__name__}: {e}")
    finally:
        row["time_s"] = time.perf_counter() - t0
        if threads:
            etakit.set_num_threads(old)
    return row


def _find(lr_find: Callable[[int], object], seed: int, threads: int | None) -> tuple[int, float, str]:
    """An lr_find task: (seed, suggestion, error)."""
    import etakit

    old = etakit.get_num_threads()
    try:
        if threads:
            etakit.set_num_threads(threads)
        out = lr_find(seed)
        s = out.suggestion if hasattr(out, "suggestion") else out
        if isinstance(s, bool) or not isinstance(s, (numbers.Real, np.floating)):
            raise TypeError(f"lr_find must return an LRFindResult or a number, got {type(out).__name__}")
        return seed, float(s), ""
    except Exception as e:
        return seed, math.nan, _one_line(f"{type(e).__name__}: {e}")
    finally:
        if threads:
            etakit.set_num_threads(old)


# ---- the result -------------------------------------------------------------------
class SweepResult:
    """The outcome of :func:`sweep`.

    Parameters
    ----------
    rows : iterable of dict
        The trials' rows (see ``rows`` below), in any order.
    lr_find : iterable of float, default ()
        The lr_find suggestions.
    wall_time_s : float, default NaN
        The sweep's wall time.
    lr_find_errors : iterable of str, default ()
        The errors of the lr_find runs that failed, one line each.

    Attributes
    ----------
    rows : list of dict
        One per trial, sorted by rate then seed: ``lr``, ``seed``,
        ``final_loss`` (NaN for a failed trial), ``diverged``, ``time_s``,
        ``error`` (empty, or the exception as one line), ``losses`` (the
        history when the training function returned one), and any extra
        results it returned (``extra``, written as more columns).
    lr_find : list of float
        The lr_find suggestions marked on the plot (one per seed when
        ``lr_find`` was a function).
    best : float
        The rate with the lowest mean final loss over its seeds, among the
        rates none of whose trials diverged or failed; NaN when there is none.
    wall_time_s : float
        The sweep's wall time.
    lr_find_errors : list of str
        The errors of the lr_find runs that failed.

    Examples
    --------
    >>> import etakit
    >>> res = etakit.sweep(lambda lr, seed: (lr - 0.1) ** 2, lrs=[0.05, 0.1, 0.2], client="serial",
    ...                    progress=False)
    >>> res.best, [r["final_loss"] for r in res.rows]
    (0.1, [0.0025000000000000005, 0.0, 0.010000000000000002])
    """

    def __init__(self, rows: Iterable[_Row], lr_find: Iterable[float] = (), wall_time_s: float = math.nan,
                 lr_find_errors: Iterable[str] = ()) -> None:
        self.rows = sorted(rows, key=lambda r: (r["lr"], r["seed"]))
        self.lr_find = [float(x) for x in lr_find]
        self.lr_find_errors = list(lr_find_errors)
        self.wall_time_s = float(wall_time_s)
        self.best = self._best()

    def _best(self) -> float:
        best, best_loss = math.nan, math.inf
        for lr in sorted({r["lr"] for r in self.rows}):
            rows = [r for r in self.rows if r["lr"] == lr]
            if any(r["diverged"] or r["error"] for r in rows):
                continue
            loss = float(np.mean([r["final_loss"] for r in rows]))
            if loss < best_loss:
                best, best_loss = lr, loss
        return best

    def columns(self) -> list[str]:
        """The table's columns: COLUMNS, then the extra results' names.

        Returns
        -------
        list of str
            ``lr``, ``seed``, ``final_loss``, ``diverged``, ``time_s``,
            ``error``, then the names of the extra results, sorted.

        Examples
        --------
        >>> import etakit
        >>> res = etakit.sweep(lambda lr, seed: {"loss": lr, "acc": 0.5}, lrs=[0.1], client="serial", progress=False)
        >>> res.columns()
        ['lr', 'seed', 'final_loss', 'diverged', 'time_s', 'error', 'acc']
        """
        extra = sorted({k for r in self.rows for k in r["extra"]})
        return list(COLUMNS) + extra

    def table(self) -> str:
        """The rows as a Markdown table.

        Returns
        -------
        str
            A header, a separator and one line per trial, the columns of
            :meth:`columns`; floats to 4 significant digits.

        Examples
        --------
        >>> import etakit
        >>> print(etakit.sweep(lambda lr, seed: lr, lrs=[0.5], client="serial", progress=False).table())
        ... # doctest: +ELLIPSIS
        | lr | seed | final_loss | diverged | time_s | error |
        |---|---|---|---|---|---|
        | 0.5 | 0 | 0.5 | False | ... |  |
        """
        cols = self.columns()
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            lines.append("| " + " | ".join(_cell(self._value(r, c)) for c in cols) + " |")
        return "\n".join(lines)

    @staticmethod
    def _value(row: _Row, col: str) -> Any:
        return row[col] if col in COLUMNS else row["extra"].get(col, "")

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table to ``path`` as CSV (one row per trial; the losses' histories are not written).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists).

        Examples
        --------
        >>> import pathlib, tempfile, etakit
        >>> res = etakit.sweep(lambda lr, seed: lr, lrs=[0.5], client="serial", progress=False)
        >>> with tempfile.TemporaryDirectory() as out:
        ...     res.to_csv(pathlib.Path(out) / "sweep.csv")
        ...     print((pathlib.Path(out) / "sweep.csv").read_text())      # doctest: +ELLIPSIS
        lr,seed,final_loss,diverged,time_s,error
        0.5,0,0.5,False,...,
        """
        cols = self.columns()
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in self.rows:
                w.writerow([self._value(r, c) for c in cols])

    def __repr__(self) -> str:
        failed = sum(1 for r in self.rows if r["error"])
        diverged = sum(1 for r in self.rows if r["diverged"])
        rates = len({r['lr'] for r in self.rows})
        return (f"SweepResult({len(self.rows)} trials over {rates} rates, best={self.best:.3g}, "
                f"diverged={diverged}, failed={failed}, wall_time_s={self.wall_time_s:.3g})")

    def plot(self, path: str | os.PathLike[str] | None = None, ax: Axes | None = None) -> Axes:
        """Final loss against rate (log scale): each trial, the mean over seeds, diverged and failed
        trials on the top edge, the lr_find suggestion(s) and the best rate marked.

        Needs matplotlib.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, SVG, ...: by its extension).
        ax : matplotlib.axes.Axes, optional
            The axes to draw on; default: those of a new figure.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> import etakit
        >>> res = etakit.sweep(lambda lr, seed: (lr - 0.1) ** 2, lrs=[0.05, 0.1, 0.2], client="serial",
        ...                    progress=False)
        >>> ax = res.plot()               # res.plot(path="sweep.png") to save it
        >>> ax.get_xscale(), ax.get_ylabel()
        ('log', 'final loss')
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install 'etakit[plot]'") from None
        if ax is None:
            fig = Figure(figsize=(7, 4.2), layout="constrained")
            ax = fig.subplots()
        ok = [r for r in self.rows if not r["error"] and not r["diverged"]]
        lrs = sorted({r["lr"] for r in ok})
        if ok:
            ax.plot([r["lr"] for r in ok], [r["final_loss"] for r in ok], ls="none", marker="o", ms=4, color="C0",
                    alpha=0.5, label="trial")
            means = [float(np.mean([r["final_loss"] for r in ok if r["lr"] == lr])) for lr in lrs]
            ax.plot(lrs, means, color="C0", lw=2, label="mean over seeds")
        losses = [r["final_loss"] for r in ok]
        lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
        pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-12)
        ax.set_ylim(lo - pad, hi + 2 * pad)
        top = hi + 2 * pad
        for kind, rows, marker, color in (("diverged", [r for r in self.rows if r["diverged"]], "^", "C3"),
                                          ("failed", [r for r in self.rows if r["error"]], "x", "0.3")):
            if rows:
                ax.plot([r["lr"] for r in rows], [top] * len(rows), ls="none", marker=marker, ms=7, color=color,
                        clip_on=False, label=f"{kind} ({len(rows)})")
        for i, s in enumerate(x for x in self.lr_find if math.isfinite(x) and x > 0):
            ax.axvline(s, color="C2", ls="--", lw=1.2 if len(self.lr_find) > 1 else 2,
                       label="lr_find suggestion" + (f"s (median {np.median(self.lr_find):.2g})"
                                                      if len(self.lr_find) > 1 else f": {s:.2g}") if i == 0 else None)
        if math.isfinite(self.best):
            ax.axvline(self.best, color="C3", lw=2, alpha=0.7, label=f"best rate: {self.best:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("final loss")
        ax.set_title(f"learning-rate sweep ({len(self.rows)} trials, {self.wall_time_s:.1f} s)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize="small")
        if path is not None:
            cast("Figure", ax.figure).savefig(path, dpi=120)
        return ax


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


# ---- running it -------------------------------------------------------------------
def _check_lrs(lrs: object) -> list[float]:
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
        raise TypeError(f"lrs must be a sequence of learning rates, got {type(lrs).__name__}")
    out = []
    for i, v in enumerate(lrs):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating, np.integer)) or \
                not math.isfinite(v) or v <= 0:
            raise ValueError(f"lrs[{i}] must be a finite number > 0, got {v!r}")
        out.append(float(v))
    if not out:
        raise ValueError("lrs is empty")
    return out


def _check_seeds(seeds: object) -> list[int]:
    if isinstance(seeds, (numbers.Integral, np.integer)) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    seeds = list(seeds)
    for i, s in enumerate(seeds):
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (numbers.Integral, np.integer)):
            raise TypeError(f"seeds[{i}] must be an int, got {type(s).__name__} {s!r}")
    if not seeds:
        raise ValueError("seeds is empty")
    return [int(s) for s in seeds]


class _Task:
    """A task of ``client="serial"``, run when its result is asked for."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args


class _Serial:
    """The executor of ``client="serial"``: each task runs when ``results`` reaches it (so that the
    progress bar, made after the tasks are submitted, shows them as they finish)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Task:
        return _Task(fn, args)

    def results(self, futures: list[_Task]) -> Iterator[tuple[_Task, Any, str | None]]:
        for f in futures:
            yield f, f.fn(*f.args), None


class _Dask:
    """Tasks on a Dask cluster: the given Client, one connected to an address, or a LocalCluster."""

    def __init__(self, client: distributed.Client | str | None, n_workers: int, processes: bool) -> None:
        try:
            import distributed
        except ImportError:
            raise ImportError("etakit.sweep on a cluster needs Dask: pip install 'etakit[sweep]' "
                              "(or client='serial' to run the trials here, one after another)") from None
        self.distributed: types.ModuleType = distributed
        self.cluster: distributed.LocalCluster | None = None
        self.own = True
        self.client: distributed.Client
        if isinstance(client, distributed.Client):
            self.client, self.own = client, False
        elif isinstance(client, str):
            # an address Dask cannot parse is refused before a Client exists: a half-built Client that
            # raised is collected later and can deadlock a LocalCluster made meanwhile (Dask's lock)
            problem = _address_problem(client)
            if problem:
                raise ValueError(f"client={client!r}: {problem}")
            try:
                self.client = distributed.Client(client)
            except ValueError as e:     # an address Dask cannot parse: say which argument
                raise ValueError(f"client={client!r}: not a scheduler address such as tcp://host:8786 ({e})") from None
        elif client is not None:
            raise TypeError(f"client must be None, 'serial', a scheduler address or a dask.distributed.Client, "
                            f"got {type(client).__name__}")
        else:
            import dask

            # Dask starts worker processes with MALLOC_TRIM_THRESHOLD_=65536, which returns every freed
            # temporary above 64 kB to the system: a numpy training loop then runs about 2x slower
            # (measured on the demo problem); its other settings (one BLAS/OpenMP thread) are kept
            environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
            environ.pop("MALLOC_TRIM_THRESHOLD_", None)
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                                        processes=processes, dashboard_address=":0",
                                                        silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)

    def submit(self, fn: Callable[..., Any], *args: Any) -> distributed.Future:
        return self.client.submit(fn, *args, pure=False)

    def results(self, futures: list[distributed.Future]) -> Iterator[tuple[distributed.Future, Any, str | None]]:
        """(future, result or None, error or None) as they finish."""
        for f in self.distributed.as_completed(futures):
            try:
                yield f, f.result(), None
            except Exception as e:       # the worker died (KilledWorker), the task was cancelled, ...
                yield f, None, _one_line(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        if self.own:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def _check_picklable(**objects: object) -> None:
    """A TypeError naming what cloudpickle cannot send to the workers, before a cluster starts (Dask's own
    error names a graph object, after logging a traceback)."""
    try:
        import cloudpickle
    except ImportError:          # no Dask either: _Dask says what to install
        return
    for name, obj in objects.items():
        if obj is None:
            continue
        try:
            cloudpickle.dumps(obj)
        except Exception as e:
            raise TypeError(f"{name} must be picklable by cloudpickle to run on a Dask cluster, and it is not "
                            f"({type(e).__name__}: {_one_line(e, 200)}); define it at module level without "
                            "locks, open files or sockets in it, or use client='serial'") from None


_Executor = Union[_Serial, _Dask]


def _bar(total: int, progress: bool, desc: str) -> tqdm[Any] | None:
    if not (progress and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="trial", leave=False, dynamic_ncols=True)


def sweep(train_fn: Callable[..., object], lrs: Sequence[float] | None = None, *, seeds: int | Sequence[int] = (0,),
          optimizer: object = None, kwargs: dict[str, Any] | None = None,
          lr_find: float | LRFindResult | Callable[[int], object] | None = None,
          client: distributed.Client | str | None = None, n_workers: int = 2, processes: bool = True,
          threads: int | None = 1, diverge: float = 4.0, progress: bool = True) -> SweepResult:
    """Train once per learning rate (and seed) as Dask tasks; gather a table of final losses.

    Parameters
    ----------
    train_fn : callable
        ``train_fn(lr, seed, **kwargs)`` runs one training and returns its
        final loss (a number), its losses (a sequence; the last is the final
        loss), or a dict with ``"loss"`` (either) and other results (numbers
        or strings: more columns of the table; one named as a column of the
        table, ``lr`` say, is an error of that trial; anything else returned,
        None, a string or complex numbers, is a TypeError of that trial).
        It must be picklable by
        cloudpickle to run on worker processes (a function of a module, a
        closure, a lambda).
    lrs : sequence of float, optional
        The learning rates, each > 0.  Default: a grid around the median
        ``lr_find`` suggestion (1/8 to 8 times it, in factors of 2), which
        then needs ``lr_find``.
    seeds : int or sequence of int, default (0,)
        One trial per rate and seed.
    optimizer : object, optional
        Passed to ``train_fn`` as ``optimizer=`` (an etakit optimizer class,
        say), so one training function serves several optimizers.
    kwargs : dict, optional
        More keyword arguments for ``train_fn``.
    lr_find : float, LRFindResult, or callable, optional
        The lr_find suggestion to mark: a number, a result of
        :func:`etakit.lr_find`, or ``lr_find(seed)`` returning either, run as
        one task per seed.
    client : None, "serial", str or dask.distributed.Client
        Where the tasks run: None starts a ``LocalCluster`` of ``n_workers``
        processes (closed afterwards); a Client or a scheduler address
        (``"tcp://host:8786"``) uses that cluster; "serial" runs the trials
        here, one after another, without Dask.
    n_workers : int, default 2
        Workers of the LocalCluster (one trial at a time each).
    processes : bool, default True
        The LocalCluster's workers as processes (False: threads of this process).
    threads : int or None, default 1
        etakit's threads inside each trial (restored after); None leaves them.
    diverge : float, default 4.0
        A trial diverged if a loss is NaN or infinite, or its final loss is
        above ``diverge`` times its first (positive) loss.
    progress : bool, default True
        A tqdm progress bar on stderr while it runs (on a terminal, with tqdm).

    Returns
    -------
    SweepResult
        The table of trials (sorted by rate, then seed), the lr_find
        suggestions, the best rate and the wall time.

    Examples
    --------
    >>> import etakit
    >>> res = etakit.sweep(lambda lr, seed: 1.0 / lr, lrs=[1.0, 2.0], seeds=[0, 1], client="serial",
    ...                    progress=False)
    >>> [(r["lr"], r["seed"], r["final_loss"]) for r in res.rows]
    [(1.0, 0, 1.0), (1.0, 1, 1.0), (2.0, 0, 0.5), (2.0, 1, 0.5)]
    """
    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable: train_fn(lr, seed) -> loss; got {type(train_fn).__name__}")
    seeds = _check_seeds(seeds)
    if lrs is not None:
        lrs = _check_lrs(lrs)
    elif lr_find is None:
        raise ValueError("give lrs, or lr_find to sweep a grid around its suggestion")
    if not isinstance(kwargs, (dict, type(None))):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    kw = {} if kwargs is None else dict(kwargs)
    if optimizer is not None:
        kw["optimizer"] = optimizer
    if isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) or n_workers < 1:
        raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
    if isinstance(diverge, bool) or not isinstance(diverge, numbers.Real) or not diverge > 1:
        raise ValueError(f"diverge must be a number > 1, got {diverge!r}")
    find_fn, found, find_errors = None, [], []
    if callable(lr_find):
        find_fn = lr_find
    elif lr_find is not None:
        s = getattr(lr_find, "suggestion", lr_find)
        if isinstance(s, bool) or not isinstance(s, (numbers.Real, np.floating)):
            raise TypeError(f"lr_find must be a number, an LRFindResult or a function of the seed, got "
                            f"{type(lr_find).__name__}")
        found = [float(s)]
    if lrs is None and find_fn is None:
        if not (math.isfinite(found[0]) and found[0] > 0):
            raise ValueError(f"lr_find's suggestion is {found[0]!r}: give lrs")
        lrs = _grid(found[0])
    if client is None or client == "serial" or isinstance(client, str):
        pass
    elif type(client).__name__ != "Client":
        raise TypeError(f"client must be None, 'serial', a scheduler address or a dask.distributed.Client, got "
                        f"{type(client).__name__}")
    if client != "serial":
        _check_picklable(train_fn=train_fn, kwargs=kw, lr_find=find_fn)
    t0 = time.perf_counter()
    ex = _Serial() if client == "serial" else _Dask(client, int(n_workers), bool(processes))
    rows = []
    try:
        pending = {}
        if find_fn is not None:
            for s in seeds:
                pending[ex.submit(_find, find_fn, s, threads)] = ("find", s, None)
            if lrs is None:      # the grid needs the suggestions first
                found, find_errors = _collect_finds(ex, pending, progress)
                pending = {}
                good = [x for x in found if math.isfinite(x) and x > 0]
                if not good:
                    raise ValueError("no lr_find run gave a suggestion (" + "; ".join(find_errors or
                                     ["NaN suggestions"]) + "): give lrs")
                lrs = _grid(float(np.median(good)))
        for lr in lrs:
            for s in seeds:
                pending[ex.submit(_trial, train_fn, lr, s, kw, threads, float(diverge))] = ("trial", s, lr)
        bar = _bar(len(pending), progress, "sweep")
        try:
            for f, out, err in ex.results(list(pending)):
                kind, s, lr = pending[f]
                if kind == "find":
                    seed, value, e = out if err is None else (s, math.nan, err)
                    found.append(value)
                    if e:
                        find_errors.append(f"seed {seed}: {e}")
                else:
                    rows.append(out if err is None else {"lr": lr, "seed": s, "final_loss": math.nan,
                                                         "diverged": False, "time_s": math.nan, "error": err,
                                                         "losses": None, "extra": {}})
                if bar is not None:
                    bar.update()
                    if kind == "trial" and rows:
                        done = [r for r in rows if not r["error"] and not r["diverged"]]
                        if done:
                            best = min(done, key=lambda r: r["final_loss"])
                            bar.set_postfix(best_lr=f"{best['lr']:.2g}", loss=f"{best['final_loss']:.4g}")
        finally:
            if bar is not None:
                bar.close()
    finally:
        if isinstance(ex, _Dask):
            ex.close()
    return SweepResult(rows, found, time.perf_counter() - t0, find_errors)


def _collect_finds(ex: _Executor, pending: dict[Any, tuple[str, int, float | None]],
                   progress: bool) -> tuple[list[float], list[str]]:
    found, errors = [], []
    bar = _bar(len(pending), progress, "lr_find")
    try:
        for f, out, err in ex.results(list(pending)):
            seed, value, e = out if err is None else (pending[f][1], math.nan, err)
            found.append(value)
            if e:
                errors.append(f"seed {seed}: {e}")
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return found, errors


def _grid(center: float) -> list[float]:
    return [center * 2.0 ** k for k in range(-3, 4)]


# ---- the demo problem, for `etakit sweep` ---------------------------------------------
def demo_trial(lr: float, seed: int, optimizer: str = "AdamW", epochs: int = 5, hidden: int = 64,
               batch: int = 64) -> dict[str, Any]:
    """One training of the demo problem (an MLP on scikit-learn's digits) at a constant rate ``lr``.

    What ``etakit sweep`` sweeps.  Needs scikit-learn (for the data).

    Parameters
    ----------
    lr : float
        The learning rate.
    seed : int
        Seeds the train/test split, the initial weights and the batches.
    optimizer : str, default "AdamW"
        The name of an etakit optimizer (``etakit.OPTIMIZERS``), its other
        hyperparameters at their defaults.
    epochs : int, default 5
        Passes over the training set (stopped early at a non-finite loss).
    hidden : int, default 64
        Hidden units of the MLP.
    batch : int, default 64
        Minibatch size.

    Returns
    -------
    dict
        ``{"loss": the mean training loss of each epoch (list of float),
        "test_acc": the held-out accuracy (float)}``.

    Examples
    --------
    >>> from etakit.sweeps import demo_trial
    >>> out = demo_trial(1e-2, seed=0, epochs=2)
    >>> sorted(out), len(out["loss"]), out["loss"][1] < out["loss"][0]
    (['loss', 'test_acc'], 2, True)
    """
    import etakit
    from .demo import MLP, _batches, load_digits_split

    Xtr, ytr, Xte, yte = load_digits_split(seed)
    net = MLP([Xtr.shape[1], hidden, 10], seed=seed)
    # (a rule class takes lr, which mypy cannot see through type[Optimizer]: the base class's __init__)
    opt = cast("Callable[..., etakit.Optimizer]", etakit.OPTIMIZERS[optimizer])(net.params, lr=lr)
    if hasattr(opt, "train"):
        opt.train()
    rng = np.random.default_rng(seed)
    losses = []
    with np.errstate(all="ignore"):      # a diverging rate overflows: recorded as diverged, not warned
        for _ in range(epochs):
            epoch = []
            for idx in _batches(rng, len(ytr), batch):
                loss, grads = net.loss_and_grad(net.params, Xtr[idx], ytr[idx])
                epoch.append(loss)
                if not math.isfinite(loss):
                    break
                opt.step(grads)
            losses.append(float(np.mean(epoch)))
            if not math.isfinite(losses[-1]):
                break
        if hasattr(opt, "eval"):
            opt.eval()
        acc = net.accuracy(Xte, yte)
    return {"loss": losses, "test_acc": acc}


def _demo_lr_find(seed: int, optimizer: str = "AdamW", hidden: int = 64, batch: int = 64) -> LRFindResult:
    """etakit.lr_find on the demo problem (a task of ``etakit sweep --lr-find``)."""
    import etakit
    from .demo import MLP, load_digits_split

    Xtr, ytr, _, _ = load_digits_split(seed)
    net = MLP([Xtr.shape[1], hidden, 10], seed=seed)
    rng = np.random.default_rng(seed)

    def loss_and_grad(params: list[npt.NDArray[Any]]) -> tuple[float, list[npt.NDArray[Any]]]:
        idx = rng.integers(0, len(ytr), batch)
        return net.loss_and_grad(params, Xtr[idx], ytr[idx])

    return etakit.lr_find(loss_and_grad, net.params, optimizer=etakit.OPTIMIZERS[optimizer], start_lr=1e-5,
                          end_lr=10.0, num_steps=60, progress=False)


class _Demo:
    """Picklable train and lr_find functions of the demo problem with the CLI's settings."""

    def __init__(self, optimizer: str, epochs: int, hidden: int) -> None:
        self.optimizer, self.epochs, self.hidden = optimizer, epochs, hidden

    def __call__(self, lr: float, seed: int) -> dict[str, Any]:
        return demo_trial(lr, seed, optimizer=self.optimizer, epochs=self.epochs, hidden=self.hidden)

    def find(self, seed: int) -> LRFindResult:
        return _demo_lr_find(seed, optimizer=self.optimizer, hidden=self.hidden)


def _address_problem(address: str) -> str:
    """Why Dask cannot parse a scheduler address (its own parser), or "" (also without Dask: then the
    sweep says what to install)."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        return ""
    try:
        scheme, loc = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(loc, 8786)
    except (ValueError, TypeError) as e:
        return f"not a scheduler address such as tcp://host:8786 ({e})"
    return ""


def main(argv: Sequence[str] | None = None, prog: str = "etakit sweep") -> int:
    """``etakit sweep``: a learning-rate sweep of the demo problem on Dask; writes sweep.csv and sweep.png.

    Parameters
    ----------
    argv : sequence of str, optional
        The command-line arguments (default: ``sys.argv[1:]``); ``--help``
        lists them.
    prog : str, default "etakit sweep"
        The program name in the usage and error messages.

    Returns
    -------
    int
        The exit status: 0, or 2 for bad arguments, after a one-line error
        on stderr (as argparse).

    Examples
    --------
    From the shell: ``etakit sweep --lrs 1e-3 3e-3 1e-2 --seeds 0 1 --epochs 3 --out sweep-out``.
    Here, serially (without Dask):

    >>> import tempfile
    >>> from etakit.sweeps import main
    >>> with tempfile.TemporaryDirectory() as out:
    ...     main(["--lrs", "1e-3", "1e-2", "--epochs", "1", "--serial", "--no-progress", "--out", out])
    ... # doctest: +ELLIPSIS
    etakit sweep: AdamW on the demo problem, 1 epochs per trial, serially
    | lr | seed | final_loss | diverged | time_s | error | test_acc |
    ...
    best rate: 0.01 (lowest mean final training loss among rates that neither diverged nor failed); 2 trials in ...
    wrote .../sweep.csv, .../sweep.png
    0
    """
    import argparse

    import etakit

    ap = argparse.ArgumentParser(prog=prog, description="A learning-rate sweep of the demo problem (an MLP on "
                                 "scikit-learn's digits): one training per rate and seed as Dask tasks, on a "
                                 "LocalCluster unless --address is given. Writes sweep.csv and sweep.png.")
    ap.add_argument("--lrs", type=float, nargs="+", metavar="LR", help="learning rates (default: a grid around "
                    "the lr_find suggestion, 1/8 to 8 times it; needs --lr-find)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED", help="one trial per rate and seed")
    ap.add_argument("--lr-find", action="store_true", help="run etakit.lr_find once per seed (as tasks) and mark "
                    "its suggestions on the plot")
    ap.add_argument("--optimizer", default="AdamW", help="an etakit optimizer (default AdamW)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units of the MLP (default 64)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    ap.add_argument("--address", help="a Dask scheduler address (tcp://host:8786) to run on instead")
    ap.add_argument("--serial", action="store_true", help="run the trials here, one after another, without Dask")
    ap.add_argument("--out", default="etakit-sweep", help="output folder (default ./etakit-sweep)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{prog}: error: {_one_line(message, 1000)}", file=sys.stderr)
        return 2

    if args.optimizer not in etakit.OPTIMIZERS:
        return fail(f"--optimizer {args.optimizer}: not an etakit optimizer (one of {', '.join(etakit.OPTIMIZERS)})")
    from ._step import RuleSpec

    if RuleSpec.of(etakit.OPTIMIZERS[args.optimizer]).matrix_only:
        return fail(f"--optimizer {args.optimizer}: updates 2-D parameters (matrices) only, and the demo MLP has "
                    "biases; choose an optimizer of every parameter (AdamW, ...)")
    bad = [s for s in args.seeds if s < 0]
    if bad:
        return fail(f"--seeds must be >= 0, got {bad[0]}")
    for name in ("epochs", "hidden", "workers"):
        if getattr(args, name) < 1:
            return fail(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.lrs is not None:
        bad = [v for v in args.lrs if not (math.isfinite(v) and v > 0)]
        if bad:
            return fail(f"--lrs must be finite and > 0, got {bad[0]}")
    elif not args.lr_find:
        return fail("give --lrs, or --lr-find to sweep a grid around its suggestion")
    if args.serial and args.address:
        return fail("--serial and --address exclude each other")
    if args.address is not None:
        problem = _address_problem(args.address)
        if problem:
            return fail(f"--address {args.address}: {problem}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return fail(f"--out {args.out}: not a folder")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        return fail(f"--out {args.out}: {e.strerror or e}")
    if not os.access(args.out, os.W_OK):
        return fail(f"--out {args.out}: cannot write there")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return fail("the demo problem needs scikit-learn: pip install 'etakit[demo]'")
    demo = _Demo(args.optimizer, args.epochs, args.hidden)
    client = "serial" if args.serial else args.address
    where = "serially" if args.serial else (f"on {args.address}" if args.address else
                                            f"on a LocalCluster of {args.workers} workers")
    print(f"etakit sweep: {args.optimizer} on the demo problem, {args.epochs} epochs per trial, {where}")
    try:
        res = sweep(demo, args.lrs, seeds=args.seeds, lr_find=demo.find if args.lr_find else None, client=client,
                    n_workers=args.workers, progress=not args.no_progress)
    except (ImportError, ValueError, OSError) as e:
        return fail(str(e))
    print(res.table())
    if res.lr_find:
        print("lr_find suggestions: " + ", ".join(f"{x:.3g}" for x in res.lr_find))
    print(f"best rate: {res.best:.3g} (lowest mean final training loss among rates that neither diverged nor "
          f"failed); {len(res.rows)} trials in {res.wall_time_s:.1f} s")
    csv_path = os.path.join(args.out, "sweep.csv")
    res.to_csv(csv_path)
    written = [csv_path]
    try:
        png = os.path.join(args.out, "sweep.png")
        res.plot(path=png)
        written.append(png)
    except ImportError:
        print("(no plot: pip install matplotlib)")
    print("wrote " + ", ".join(written))
    return 0
