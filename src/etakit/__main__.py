"""Command line: ``python -m etakit {demo,bench,schedule,sweep} ...`` (also installed as ``etakit``).

A bad argument is reported the way argparse reports one: a line
``etakit <command>: error: ...`` on stderr and exit status 2, never a traceback.
``etakit demo`` and ``etakit bench`` take exactly the arguments of
``python -m etakit.demo`` and ``python -m etakit.bench``.

Examples
--------
``python -m etakit schedule "warmup_cosine(peak_lr=3e-4, warmup_steps=500, total_steps=10000)" -o sched.png``
"""
import argparse
import os
import sys

# values() of this many steps is 80 MB and a plot of as many points; more is refused
MAX_STEPS = 10_000_000


class _UsageError(Exception):
    """A bad argument found after parsing: reported as ``prog: error: message``, exit status 2."""


def _fail(prog, message):
    message = " ".join(str(message).split())     # one line, whatever the message
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _steps(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= n <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_STEPS:,}, got {n}")
    return n


def _output_path(path):
    """Refuse an output file that cannot be written before any work is done."""
    from matplotlib.figure import Figure

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    supported = sorted(Figure().canvas.get_supported_filetypes())
    if ext not in supported:
        raise _UsageError(f"-o {path}: " + (f"unsupported image format '.{ext}'" if ext else "no file extension") +
                          f"; use one of {', '.join('.' + e for e in supported)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _UsageError(f"-o {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and
                                         (os.path.isdir(path) or not os.access(path, os.W_OK))):
        raise _UsageError(f"-o {path}: cannot write there")


def _schedule_cmd(args, prog):
    from . import schedules

    if args.output:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _UsageError("plotting needs matplotlib: pip install 'etakit[plot]'") from None
        _output_path(args.output)
    scheds = []
    for e in args.expression:
        try:
            scheds.append(schedules.parse(e))
        except ValueError as err:
            raise _UsageError(f"{e!r}: {err}") from None
    steps = args.steps or max(s.horizon() for s in scheds)
    if steps > MAX_STEPS:
        raise _UsageError(f"the schedules run for {steps:,} steps, too many to show; pass --steps N "
                          f"(at most {MAX_STEPS:,})")
    for s in scheds:
        v = s.values(steps)
        print(f"{s!r}\n  steps 0..{steps - 1}: first {v[0]:.6g}, max {v.max():.6g} at step {int(v.argmax())}, "
              f"last {v[-1]:.6g}")
    if args.output:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4 + 0.25 * len(scheds)), layout="constrained")
        ax = fig.subplots()
        for s in scheds:
            s.plot(steps, ax=ax)
        if args.log:
            ax.set_yscale("log")
        ax.set_title(args.title or "learning-rate schedule")
        fig.legend(fontsize="small", loc="outside lower center")
        try:
            fig.savefig(args.output, dpi=120)
        except (OSError, ValueError) as err:    # ValueError: a --title matplotlib cannot typeset
            raise _UsageError(f"cannot write {args.output}: {err}") from None
        print(f"wrote {args.output}")
    return 0


def _demo_cmd(argv):
    """``etakit demo``: demo.main's arguments; the output folder is checked before the run."""
    from . import demo

    prog = "etakit demo"
    pre = argparse.ArgumentParser(prog=prog, add_help=False)
    pre.add_argument("--out")
    pre.add_argument("--epochs", type=_at_least(1))
    pre.add_argument("--seed", type=_at_least(0))
    known, _ = pre.parse_known_args(argv)
    if known.out is not None:
        if os.path.exists(known.out) and not os.path.isdir(known.out):
            return _fail(prog, f"--out {known.out}: not a folder")
        parent = os.path.dirname(os.path.abspath(known.out))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            return _fail(prog, f"--out {known.out}: cannot create or write a folder there")
    try:
        return demo.main(argv)
    except ImportError as err:
        return _fail(prog, f"{err} (the demo needs: pip install 'etakit[demo]')")
    except (OSError, ValueError, TypeError) as err:
        return _fail(prog, str(err))


def _sweep_cmd(argv):
    """``etakit sweep``: sweeps.main's arguments; its own checks report one line and exit 2."""
    from . import sweeps

    prog = "etakit sweep"
    try:
        return sweeps.main(argv, prog=prog)
    except ImportError as err:
        return _fail(prog, f"{err} (the sweep needs: pip install 'etakit[sweep,demo]')")
    except (OSError, ValueError, TypeError) as err:
        return _fail(prog, str(err))


def _bench_cmd(argv):
    from . import bench

    bench.main(argv, prog="etakit bench")    # exits 2 on a bad argument, 1 on a missed target
    return 0


def _at_least(lo):
    def check(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {n}")
        return n
    return check


def main(argv=None):
    """``etakit``'s entry point; returns the exit status.

    Examples
    --------
    >>> main(["schedule", "cosine(0.1, 10)", "--steps", "3"])
    cosine(lr=0.1, total_steps=10, min_lr=0.0)
      steps 0..2: first 0.1, max 0.1 at step 0, last 0.0904508
    0
    """
    ap = argparse.ArgumentParser(prog="etakit", description="etakit: fast optimizer steps and learning-rate tools")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("schedule", help="evaluate and plot learning-rate schedules",
                        description="Evaluate schedule expressions (etakit.schedules functions, parsed "
                                    "safely, never eval'd) and plot them.")
    sp.add_argument("expression", nargs="+", help='e.g. "warmup(cosine(0.1, total_steps=1000), warmup_steps=100)"')
    sp.add_argument("-o", "--output", help="image file to write (PNG, SVG, PDF by extension)")
    sp.add_argument("--steps", type=_steps, help=f"steps to show, 1 to {MAX_STEPS:,} (default: the schedules' "
                                                 "own length)")
    sp.add_argument("--log", action="store_true", help="logarithmic learning-rate axis")
    sp.add_argument("--title")
    # demo and bench parse their own arguments: what follows the command is handed over as it is
    sub.add_parser("demo", help="train an MLP on scikit-learn's digits with lr_find + AdamW, or with --auto "
                        "learning-rate-free (Prodigy) (etakit demo -h)",
                   add_help=False)
    sub.add_parser("bench", help="benchmark the optimizer step, as python -m etakit.bench (etakit bench -h)",
                   add_help=False)
    sub.add_parser("sweep", help="a learning-rate sweep of the demo problem on Dask, writing a table and a plot "
                                 "(etakit sweep -h)", add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        return _demo_cmd(argv[1:])
    if argv[:1] == ["bench"]:
        return _bench_cmd(argv[1:])
    if argv[:1] == ["sweep"]:
        return _sweep_cmd(argv[1:])
    args = ap.parse_args(argv)
    prog = f"etakit {args.command}"
    try:
        return _schedule_cmd(args, prog)
    except _UsageError as err:
        return _fail(prog, str(err))


if __name__ == "__main__":
    sys.exit(main())
