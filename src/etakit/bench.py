"""Benchmark of etakit's optimizer step against its physical limit and its rivals.

``python -m etakit.bench`` prints, for each optimizer (float32) and size, the
time per step, the bandwidth it achieves, and ratios measured side by side in
the same run:

- ``probe``: a C kernel of this project with the step's exact access pattern
  (read the gradient, read and write the parameter and every state buffer)
  and trivial arithmetic, on the same threads: the memory-bandwidth limit of
  the step on this machine.  ``% probe`` is etakit's bandwidth over the probe's.
- ``x numpy``: the in-place pure-numpy implementation (``etakit.reference``)
  divided by etakit's time.
- ``x torch``: ``torch.optim`` with ``fused=True`` (``foreach=True`` where
  PyTorch has no fused CPU kernel, marked ``*``) divided by etakit's time,
  when torch is installed.

Measurements of the contenders are interleaved, repeated, and reported as
medians.  Bandwidth counts compulsory traffic: every buffer read once, every
written buffer written once.

Examples
--------
>>> from etakit import bench
>>> case = bench.Case("Adam", [1000])
>>> times = bench.measure({"etakit": case.etakit_step()}, repeats=3, min_time=1e-3)
>>> times["etakit"] > 0
True
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

import etakit
from etakit import _core, reference
from etakit._step import RuleSpec

__all__ = ["Case", "measure", "mixed_sizes", "run_case", "format_table", "check_targets", "main"]

# Benchmark settings where the defaults would leave a rule's state unused.
# (ASGD: averaging from the start, so that ax is read as well as written.)
BENCH_KW: dict[str, dict[str, Any]] = {"SGD": dict(momentum=0.9), "ASGD": dict(t0=0.0)}
# The bandwidth-bound rules: a matrix-only rule (Muon) spends its step in matrix products (BLAS),
# so the bandwidth of its element-wise passes says nothing of it.
RULES = [name for name, cls in etakit.OPTIMIZERS.items() if not RuleSpec.of(cls).matrix_only]


# Accesses per element (reads and writes of param, grad and state) of rules that make more
# than one pass at these settings, on the matrices they are benchmarked with (MATRIX): the
# byte count their bandwidth is measured by.  The others make one pass: 1 + 2 * (1 + state).
TRAFFIC = {
    "LAMB": 10,        # moments and the two norms, then the update from the new moments
    "LARS": 7,         # the two norms of p and g, then the momentum update
    "Adafactor": 6,    # row/column sums of g^2; the norms of p and the update; the update
    "DoG": 6,          # the norms of g and p - x0 (reads p, g, x0), then the update (reads p, g, writes p)
    "LDoG": 6,
    # the learning-rate-free rules (defaults): sums over every tensor, then what needs them
    "Prodigy": 12,     # g, p, p0, s -> s; then g, p, exp_avg, exp_avg_sq -> the three
    "DAdaptAdam": 11,  # g, s, exp_avg, exp_avg_sq -> the three; then p, exp_avg, exp_avg_sq -> p
    "DAdaptSGD": 7,    # one pass: g, p, s, x0 -> s, z, p
    "DAdaptAdaGrad": 9,  # g, alphak, sk -> alphak, sk; then x0, sk, alphak -> p
}
# Rules whose work depends on a tensor's matrix form: benchmarked on a matrix of the same size.
MATRIX = {"LARS", "Adafactor"}


def _shape(name: str, n: int) -> tuple[int, ...]:
    """The benchmark shape of ``n`` elements for rule ``name`` (rows x cols for matrix rules)."""
    if name not in MATRIX or n < 4:
        return (n,)
    cols = 1 << max(1, (int(n).bit_length() - 1) // 2)
    while n % cols:
        cols //= 2
    return (n // cols, cols)


def _train_mode(opt: Any) -> Any:
    """An optimizer with modes (schedule-free) in train mode, where it steps."""
    if hasattr(opt, "train"):
        opt.train()
    return opt


def _settings(name: str) -> tuple[Any, dict[str, Any]]:
    cls = etakit.OPTIMIZERS[name]
    return cls, dict(BENCH_KW.get(name, {}))


def _reference_stepper(name: str, params: list[npt.NDArray[Any]]) -> Callable[[list[npt.NDArray[Any]]], None]:
    cls, kw = _settings(name)
    hp = {**cls([np.zeros(1, np.float32)]).defaults, **kw}
    state: list[dict[str, Any]] = [{} for _ in params]
    group: dict[str, Any] = {}          # the group's scalars, for rules that keep some (DoG)
    whole = {**hp, "params": params}    # rules that step the whole optimizer at once (Prodigy, D-Adaptation)
    step = [0]

    def run(grads: list[npt.NDArray[Any]]) -> None:
        step[0] += 1
        if hasattr(reference, f"{cls.rule}_groups"):
            reference.step_groups(cls.rule, [whole], grads, state, [step[0]] * len(params))
            return
        extra = reference.group_reductions(cls.rule, params, grads, state, group, hp)
        for p, g, st, kw in zip(params, grads, state, extra):
            reference.step_rule(cls.rule, p, g, st, step=step[0], **hp, **kw)
    return run


def torch_contender(name: str, params: list[Any], kw: dict[str, Any]) -> tuple[Any, str] | None:
    """The reference implementation's fastest CPU path for rule ``name``:
    (optimizer, "fused" | "foreach" | "loop"), or None when it is not installed."""
    ref = etakit.OPTIMIZERS[name].reference_impl or f"torch.optim.{name}"
    module, _, attr = ref.rpartition(".")
    try:
        import importlib
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    import inspect
    accepted = inspect.signature(cls.__init__).parameters
    for mode, extra in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("loop", {})):
        # only a real fused path counts (pytorch_optimizer takes **kwargs and ignores `fused`)
        if mode != "loop" and (mode not in accepted or (mode == "fused" and not module.startswith("torch."))):
            continue
        try:
            opt = _train_mode(cls(params, **kw, **extra))
            opt.step()
            return opt, mode
        except (TypeError, RuntimeError, ValueError):
            continue
    return None


class Case:
    """One optimizer over tensors of the given sizes, with every contender's inputs built.

    Each contender updates its own copy of the parameters, so none disturbs
    another's numbers; inputs are built here, outside any timed region.

    Parameters
    ----------
    name : str
        An optimizer's class name (``etakit.OPTIMIZERS``).
    sizes : list of int
        Element counts of the tensors (matrix rules get matrices of that size).
    dtype : numpy dtype
        float32 or float64.
    seed : int
        Seed of the parameters and gradients.

    Examples
    --------
    >>> case = Case("Adam", [1000, 10])
    >>> case.elements, case.bytes_per_step      # 7 float32 accesses per element
    (1010, 28280)
    >>> case.etakit_step()()
    """

    def __init__(self, name: str, sizes: Sequence[int], dtype: npt.DTypeLike = np.float32, seed: int = 0) -> None:
        self.name = name
        self.sizes = [int(s) for s in sizes]
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        shapes = [_shape(name, n) for n in self.sizes]
        self.grads = [(rng.standard_normal(s, dtype=np.float32) * 1e-3).astype(dtype) for s in shapes]
        self._init = [rng.standard_normal(s, dtype=np.float32).astype(dtype) for s in shapes]
        cls, kw = _settings(name)
        # the state buffers the rule keeps at these settings: what a step reads and writes
        probe = _train_mode(cls([np.zeros(3, self.dtype)], **kw))
        probe.step([np.ones(3, self.dtype)])
        self.n_state = sum(1 for a in probe._state[0].values() if a.shape == (3,))

    @property
    def elements(self) -> int:
        """Elements of all tensors.

        Examples
        --------
        >>> Case("SGD", [3, 4]).elements
        7
        """
        return sum(self.sizes)

    @property
    def accesses(self) -> int:
        """Accesses per element of a step.

        The gradient read, the parameter and each state buffer read and
        written; more for a rule that makes several passes (``TRAFFIC``).

        Examples
        --------
        >>> Case("Adam", [10]).accesses       # g; p, exp_avg, exp_avg_sq read and written
        7
        """
        return TRAFFIC.get(self.name, 1 + 2 * (1 + self.n_state))

    @property
    def bytes_per_step(self) -> int:
        """Compulsory traffic of a step (see ``accesses``).

        Examples
        --------
        >>> Case("Adam", [10]).bytes_per_step      # 7 float32 accesses per element
        280
        """
        return self.elements * self.dtype.itemsize * self.accesses

    @property
    def probe_bytes(self) -> int:
        """Traffic of the probe: one pass with the rule's state buffers.

        Examples
        --------
        >>> Case("LAMB", [10]).probe_bytes, Case("LAMB", [10]).bytes_per_step   # one pass, against LAMB's two
        (280, 400)
        """
        return self.elements * self.dtype.itemsize * (1 + 2 * (1 + self.n_state))

    def _params(self) -> list[npt.NDArray[Any]]:
        return [p.copy() for p in self._init]

    def etakit_step(self) -> Callable[[], None]:
        """A callable that steps etakit's optimizer once (its state already allocated).

        Returns
        -------
        callable
            ``f()``, one step.

        Examples
        --------
        >>> step = Case("SGD", [10]).etakit_step(); step()
        """
        cls, kw = _settings(self.name)
        opt = _train_mode(cls(self._params(), **kw))
        grads = self.grads
        opt.step(grads)  # allocate state outside the timed region
        return lambda: opt.step(grads)

    def probe_step(self) -> Callable[[], None]:
        """A callable that runs the bandwidth probe once over the same access pattern.

        Returns
        -------
        callable
            ``f()``, one pass of the probe.

        Examples
        --------
        >>> probe = Case("Adam", [10]).probe_step(); probe()
        """
        params = self._params()
        plan = _core.Plan(_core.NRULES, len(params), 0)    # the probe runs as one more rule
        for i, p in enumerate(params):
            states = tuple(np.zeros_like(p) if j < self.n_state else None for j in range(6))
            plan.set_tensor(i, p, states, 0, 0)
        plan.index_written()
        grads = self.grads
        return lambda: plan.run(grads)

    def numpy_step(self) -> Callable[[], None]:
        """A callable that steps the in-place numpy reference once.

        Returns
        -------
        callable
            ``f()``, one step of ``etakit.reference``.

        Examples
        --------
        >>> step = Case("Adam", [10]).numpy_step(); step()
        """
        run = _reference_stepper(self.name, self._params())
        grads = self.grads
        run(grads)
        return lambda: run(grads)

    def torch_step(self) -> tuple[Callable[[], Any], str] | None:
        """The reference implementation's step, on torch tensors.

        Returns
        -------
        tuple or None
            ``(callable, mode)``, the mode being "fused", "foreach" or "loop";
            None when the reference (or torch) is not installed.

        Examples
        --------
        >>> found = Case("Adam", [10]).torch_step()
        >>> found is None or found[1] == "fused"
        True
        """
        try:
            import torch
        except ImportError:
            return None
        _, kw = _settings(self.name)
        params = [torch.from_numpy(p).requires_grad_() for p in self._params()]
        for p, g in zip(params, self.grads):
            p.grad = torch.from_numpy(g.copy())   # its own: some references change .grad in place (schedulefree)
        found = torch_contender(self.name, params, kw)
        if found is None:
            return None
        opt, mode = found
        return opt.step, mode


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per timed sample so that a sample lasts at least min_time."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1 << 24:
            return n
        n = max(2 * n, int(n * min_time / max(dt, 1e-9)) + 1)


def measure(fns: Mapping[str, Callable[[], object]], repeats: int = 7, min_time: float = 0.05) -> dict[str, float]:
    """Median seconds per call of each callable, sampled in interleaved rounds.

    Parameters
    ----------
    fns : mapping of str to callable
        The contenders, ``f()`` each.
    repeats : int
        Rounds; each round times every contender once, in turn.
    min_time : float
        Seconds each timed sample lasts at least (calls per sample are calibrated first).

    Returns
    -------
    dict of str to float
        The median seconds per call of each contender.

    Examples
    --------
    >>> t = measure({"noop": lambda: None}, repeats=3, min_time=1e-3)
    >>> 0 < t["noop"] < 1e-3
    True
    """
    loops = {k: _calibrate(f, min_time) for k, f in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            n = loops[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def mixed_sizes(total: int = 18_000_000, count: int = 200, seed: int = 0) -> list[int]:
    """Sizes of ``count`` tensors summing to about ``total``.

    A few large matrices and many small vectors, as in a real model's parameter list.

    Parameters
    ----------
    total : int
        The sum to aim at (the result is at most this).
    count : int
        How many tensors.
    seed : int
        Seed of the log-uniform draw.

    Returns
    -------
    list of int
        ``count`` sizes, each at least 1.

    Examples
    --------
    >>> s = mixed_sizes(1_000_000, count=50)
    >>> len(s), 0.99e6 < sum(s) <= 1e6
    (50, True)
    """
    rng = np.random.default_rng(seed)
    raw = np.exp(rng.uniform(np.log(64), np.log(2_000_000), count))
    sizes = np.maximum(1, (raw / raw.sum() * total).astype(np.int64))
    return [int(s) for s in sizes]


def run_case(case: Case, repeats: int, min_time: float, with_torch: bool = True,
             with_numpy: bool = True) -> dict[str, Any]:
    """Measure one case against all contenders.

    Parameters
    ----------
    case : Case
        What to measure.
    repeats : int
        As for :func:`measure`.
    min_time : float
        As for :func:`measure`.
    with_torch, with_numpy : bool
        Whether to measure the reference implementation and the numpy reference.

    Returns
    -------
    dict
        Times (``us_per_step``, ``numpy_us``, ``torch_us``), bandwidths
        (``gb_per_s``, ``probe_gb_per_s``, ``frac_probe``) and ratios
        (``x_numpy``, ``x_torch`` and the reference's ``torch_mode``).

    Examples
    --------
    >>> row = run_case(Case("SGD", [1000]), repeats=3, min_time=1e-3, with_torch=False)
    >>> row["x_torch"] is None and row["us_per_step"] > 0
    True
    """
    fns = {"etakit": case.etakit_step(), "probe": case.probe_step()}
    if with_numpy:
        fns["numpy"] = case.numpy_step()
    torch_fn = case.torch_step() if with_torch else None
    if torch_fn is not None:
        fns["torch"] = torch_fn[0]
    t = measure(fns, repeats, min_time)
    row = {
        "optimizer": case.name,
        "tensors": len(case.sizes),
        "elements": case.elements,
        "us_per_step": t["etakit"] * 1e6,
        "gb_per_s": case.bytes_per_step / t["etakit"] / 1e9,
        "probe_gb_per_s": case.probe_bytes / t["probe"] / 1e9,
        "frac_probe": (case.bytes_per_step / t["etakit"]) / (case.probe_bytes / t["probe"]),
        "x_numpy": t["numpy"] / t["etakit"] if "numpy" in t else None,
        "x_torch": t["torch"] / t["etakit"] if "torch" in t else None,
        "torch_mode": torch_fn[1] if torch_fn is not None else None,
        "numpy_us": t["numpy"] * 1e6 if "numpy" in t else None,
        "torch_us": t["torch"] * 1e6 if "torch" in t else None,
    }
    return row


def _fmt_n(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return str(n)


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`run_case` as a text (or Markdown) table.

    Parameters
    ----------
    rows : list of dict
        What :func:`run_case` returned.
    markdown : bool
        A Markdown table instead of aligned text.

    Returns
    -------
    str
        The table, one line per row after the header.

    Examples
    --------
    >>> row = run_case(Case("SGD", [1000]), repeats=1, min_time=1e-3, with_torch=False)
    >>> format_table([row], markdown=True).splitlines()[0]
    '| optimizer | tensors | elements | us/step | GB/s | % probe | x numpy | x torch |'
    """
    head = ["optimizer", "tensors", "elements", "us/step", "GB/s", "% probe", "x numpy", "x torch"]
    lines = []
    for r in rows:
        xt = "-" if r["x_torch"] is None else f"{r['x_torch']:.2f}" + {"fused": "", "foreach": "*"}.get(
            r["torch_mode"], "**")
        lines.append([r["optimizer"], str(r["tensors"]), _fmt_n(r["elements"]), f"{r['us_per_step']:.1f}",
                      f"{r['gb_per_s']:.1f}", f"{100 * r['frac_probe']:.0f}%",
                      "-" if r["x_numpy"] is None else f"{r['x_numpy']:.1f}", xt])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines])


def machine_line() -> str:
    """One line saying what the numbers were measured on.

    Examples
    --------
    >>> "SIMD" in machine_line()
    True
    """
    try:
        import torch
        tv = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        tv = "torch not installed"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, etakit {etakit.__version__}: SIMD "
            f"{etakit.simd_variant()}, {etakit.get_num_threads()} threads; numpy {np.__version__}; {tv}")


def check_targets(repeats: int = 9, with_torch: bool = True,
                  progress: Callable[[str], object] | None = None) -> list[tuple[str, str, bool]]:
    """Measure the project's performance targets.

    Parameters
    ----------
    repeats : int
        Rounds of each measurement.
    with_torch : bool
        Also measure torch's fused step (reported beside the small-step target).
    progress : callable, optional
        Called with a label before each measurement.

    Returns
    -------
    list of tuple
        ``(target, measured, ok)`` for each target.

    Examples
    --------
    >>> for target, measured, ok in check_targets():     # doctest: +SKIP
    ...     print(ok, target, measured)
    """
    progress = progress or (lambda label: None)
    progress("Adam, 1 tensor of 50M")
    big = run_case(Case("Adam", [50_000_000]), repeats, 0.1, with_torch)
    progress("Adam, 200 tensors of 18M in all")
    mixed = run_case(Case("Adam", mixed_sizes(18_000_000)), repeats, 0.1, with_torch)
    progress("Adam, 1 tensor of 1k")
    small = run_case(Case("Adam", [1000]), repeats, 0.05, with_torch)
    torch_small = "" if small["torch_us"] is None else f", torch fused {small['torch_us']:.1f} us"
    return [
        ("Adam f32, 50M elements: >= 90% of probe bandwidth",
         f"{100 * big['frac_probe']:.0f}% ({big['gb_per_s']:.1f} of {big['probe_gb_per_s']:.1f} GB/s)",
         big["frac_probe"] >= 0.90),
        ("Adam f32, 50M elements: >= 8x in-place numpy", f"{big['x_numpy']:.1f}x", big["x_numpy"] >= 8),
        ("Adam f32, 200 tensors / 18M elements: >= 85% of probe bandwidth",
         f"{100 * mixed['frac_probe']:.0f}% ({mixed['gb_per_s']:.1f} of {mixed['probe_gb_per_s']:.1f} GB/s)",
         mixed["frac_probe"] >= 0.85),
        ("Adam opt.step on 1,000 elements: <= 3 us",
         f"{small['us_per_step']:.2f} us (numpy {small['numpy_us']:.1f} us{torch_small})",
         small["us_per_step"] <= 3.0),
    ]


class _Progress:
    """A progress bar over the cases, on stderr: tqdm's when installed, else one line per case.

    ``enabled=None`` shows it only when stderr is a terminal (as lr_find does);
    ``True`` always, ``False`` never.  Call it with a label before each case.
    """

    def __init__(self, total: int, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done = total, -1
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = isatty() if enabled is None else bool(enabled)
        self.bar: Any = None
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="case", file=self.stream, leave=False, dynamic_ncols=True)

    def __call__(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            if self.done:
                self.bar.update(1)
            self.bar.set_description_str(label)
        elif self.enabled:
            print(f"[{self.done + 1}/{self.total}] {label}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total - self.bar.n)
            self.bar.close()


def _count_arg(lo: int, hi: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
        if not math.isfinite(v) or v != int(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what} between {lo:,} and {hi:,}, got {text}" if hi
                                             else f"must be {what} >= {lo}, got {text}")
        return int(v)
    return check


def main(argv: Sequence[str] | None = None, prog: str = "python -m etakit.bench") -> list[Any]:
    """Run ``python -m etakit.bench`` (see the module docstring).

    Bad arguments exit with status 2 and one line on stderr (argparse's way),
    a missed target with status 1.  Progress goes to stderr when it is a
    terminal (or with ``--progress``); the table, once, to stdout.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (``--help`` lists them); default ``sys.argv[1:]``.
    prog : str
        The program name in messages.

    Returns
    -------
    list
        The rows measured (dicts, as :func:`run_case` returns them), or with
        ``--targets`` the ``(target, measured, ok)`` tuples.

    Examples
    --------
    >>> rows = main(["--quick", "--optimizers", "Adam"])     # doctest: +SKIP
    """
    ap = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (about 30 s)")
    ap.add_argument("--optimizers", nargs="+", choices=list(RULES), default=list(RULES))
    ap.add_argument("--sizes", nargs="+", type=_count_arg(1, 10**10, "an element count"),
                    help="element counts (default 1e3 .. 5e7)")
    ap.add_argument("--repeats", type=_count_arg(1, what="an integer"),
                    help="interleaved rounds per measurement (median reported)")
    ap.add_argument("--threads", type=_count_arg(1, what="an integer"), help="etakit threads (default: OpenMP's)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--no-numpy", action="store_true", help="skip the in-place numpy contender")
    ap.add_argument("--no-mixed", action="store_true", help="skip the 200-tensor case")
    ap.add_argument("--mixed-all", action="store_true",
                    help="run the 200-tensor case for every optimizer listed (default: Adam only)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--targets", action="store_true",
                    help="measure only the performance targets and report pass/fail (exit 1 on a miss)")
    shown = ap.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", default=None,
                       help="show progress on stderr (default: only when stderr is a terminal; a bar needs tqdm)")
    shown.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    args = ap.parse_args(argv)

    if args.threads:
        etakit.set_num_threads(args.threads)
    if args.quick:
        sizes = args.sizes or [1e3, 1e5, 4e6]
        repeats, min_time, mixed_total = args.repeats or 5, 0.02, 2_000_000
    else:
        sizes = args.sizes or [1e3, 1e4, 1e5, 1e6, 1e7, 5e7]
        repeats, min_time, mixed_total = args.repeats or 9, 0.1, 18_000_000
    print(machine_line(), flush=True)
    try:
        if args.targets:
            bar = _Progress(3, args.progress)
            try:
                results = check_targets(args.repeats or 9, not args.no_torch, progress=bar)
            finally:
                bar.close()
            for target, measured, ok in results:
                print(f"{'PASS' if ok else 'MISS'}  {target}: {measured}")
            if not all(ok for _, _, ok in results):
                sys.exit(1)
            return results
        cases: list[tuple[str, list[int] | None]] = [(name, [int(n)]) for name in args.optimizers for n in sizes]
        if not args.no_mixed:
            cases += [(name, None) for name in (args.optimizers if args.mixed_all else ("Adam",))
                      if name in args.optimizers]
        rows: list[dict[str, Any]] = []
        bar = _Progress(len(cases), args.progress)
        try:
            for name, case_sizes in cases:
                if case_sizes is None:
                    bar(f"{name}, 200 tensors of {_fmt_n(mixed_total)} in all")
                    rows.append(run_case(Case(name, mixed_sizes(mixed_total)), repeats, min_time, not args.no_torch,
                                        not args.no_numpy))
                else:
                    bar(f"{name}, 1 tensor of {_fmt_n(case_sizes[0])}")
                    rows.append(run_case(Case(name, case_sizes), repeats, min_time, not args.no_torch,
                                        not args.no_numpy))
        finally:
            bar.close()
    except MemoryError:
        ap.error("not enough memory for these sizes; pass smaller --sizes")
    print(format_table(rows, markdown=args.markdown))
    print("\nus/step: median time per optimizer step; GB/s: compulsory traffic / time; % probe: "
          "fraction of the bandwidth of a same-access-pattern C probe; x numpy / x torch: how many "
          "times faster than in-place numpy (etakit.reference) / torch.optim fused=True "
          "(* foreach where there is no fused CPU kernel, ** a per-parameter loop)")
    return rows


if __name__ == "__main__":
    main()
