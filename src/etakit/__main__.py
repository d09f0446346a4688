"""Command line: ``python -m etakit {demo,bench,schedule} ...`` (also installed as ``etakit``).

Examples
--------
``python -m etakit schedule "warmup_cosine(peak_lr=3e-4, warmup_steps=500, total_steps=10000)" -o sched.png``
"""
import argparse
import sys


def _schedule_cmd(args):
    from . import schedules

    try:
        scheds = [schedules.parse(e) for e in args.expression]
    except (ValueError, TypeError) as e:
        print(f"etakit schedule: {e}", file=sys.stderr)
        return 2
    steps = args.steps or max(s.horizon() for s in scheds)
    for s in scheds:
        v = s.values(steps)
        print(f"{s!r}\n  steps 0..{steps - 1}: first {v[0]:.6g}, max {v.max():.6g} at step {int(v.argmax())}, "
              f"last {v[-1]:.6g}")
    if args.output:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            print("etakit schedule: plotting needs matplotlib: pip install 'etakit[plot]'", file=sys.stderr)
            return 2
        fig = Figure(figsize=(8, 4 + 0.25 * len(scheds)), layout="constrained")
        ax = fig.subplots()
        for s in scheds:
            s.plot(steps, ax=ax)
        if args.log:
            ax.set_yscale("log")
        ax.set_title(args.title or "learning-rate schedule")
        fig.legend(fontsize="small", loc="outside lower center")
        fig.savefig(args.output, dpi=120)
        print(f"wrote {args.output}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="etakit", description="etakit: fast optimizer steps and learning-rate tools")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("schedule", help="evaluate and plot learning-rate schedules",
                        description="Evaluate schedule expressions (etakit.schedules functions, parsed "
                                    "safely, never eval'd) and plot them.")
    sp.add_argument("expression", nargs="+", help='e.g. "warmup(cosine(0.1, total_steps=1000), warmup_steps=100)"')
    sp.add_argument("-o", "--output", help="image file to write (PNG, SVG, PDF by extension)")
    sp.add_argument("--steps", type=int, help="steps to show (default: the schedules' own length)")
    sp.add_argument("--log", action="store_true", help="logarithmic learning-rate axis")
    sp.add_argument("--title")
    sub.add_parser("demo", help="train an MLP on scikit-learn's digits with lr_find + AdamW", add_help=False)
    bp = sub.add_parser("bench", help="benchmark the optimizer step (python -m etakit.bench)", add_help=False)
    bp.add_argument("rest", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        from . import demo
        return demo.main(argv[1:])
    args = ap.parse_args(argv)
    if args.command == "schedule":
        return _schedule_cmd(args)
    from . import bench
    bench.main(args.rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
