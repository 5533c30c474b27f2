"""python -m bench <suite> [options]: one harness for every benchmark of lif_cuda.

    python -m bench layer --quick            # any suite at tiny sizes: checks that it works
    python -m bench layer                    # fused vs reference vs Rockpool, copy_ bandwidth
    python -m bench network --impls all      # Linear(n,n)+LIF against every installed peer
    python -m bench report FILE.json         # the Markdown tables and targets of a result again
    python -m bench plot FILE.json           # its PNGs, beside it

Suites: layer, network, per-call, features, synaptic, lengths, train, gpu (bench/suites/).
Targets: bench/targets.py. Results: bench/results/<suite>-<device>-<date>.json.
"""
import argparse
import os
import re
import sys

TIMING_DEFAULTS = dict(device="cpu", impls="all", repeats=5, max_repeats=20, budget_s=1.0, slow_call_s=10.0,
                       slow_repeats=3, max_call_s=60.0, threads=None, seed=0)


def _common_options(p):
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default cpu; gpu: cuda)")
    p.add_argument("--impls", help="comma-separated implementations (default: the suite's; 'all' where peers are "
                                   "offered; missing peers are skipped)")
    p.add_argument("--repeats", type=int, help="timed samples per implementation and point after warm-up")
    p.add_argument("--max-repeats", type=int, help="fast implementations keep sampling up to this")
    p.add_argument("--budget", type=float, dest="budget_s", help="seconds a fast implementation may spend per "
                                                                  "point on extra samples")
    p.add_argument("--slow-call-s", type=float, help="an implementation whose warm-up call takes longer gets "
                                                     "--slow-repeats")
    p.add_argument("--slow-repeats", type=int, help="samples for slow implementations")
    p.add_argument("--max-call-s", type=float, help="an implementation whose warm-up call takes longer is timed by "
                                                    "that call alone, and skipped where it is projected to take "
                                                    "longer (0 = no cap)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: checks that the suite works")
    p.add_argument("--out", help="JSON path (default bench/results/<suite>-<device>-<date>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")


def build_parser():
    from bench.suites import NAMES, SUITES

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="<suite>|report|plot")
    for name in NAMES:
        suite = SUITES[name]
        first = re.split(r"[.:;]\s", " ".join(suite.__doc__.split()).partition(": ")[2])[0]
        sp = sub.add_parser(name, help=first, description=suite.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _common_options(sp)
        suite.add_options(sp)
    for name, what in (("report", "print the Markdown tables and targets of result files"),
                       ("plot", "write the PNGs of result files beside them")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("files", nargs="+", help="JSON files written by this harness")
    return p


def config(suite, args):
    """The suite's configuration: harness defaults < suite defaults < --quick < the options given."""
    cfg = dict(TIMING_DEFAULTS, memory=not args.no_memory, quick=args.quick, out=args.out,
               progress=not args.no_progress)
    cfg.update(suite.DEFAULTS)
    if args.quick:
        cfg.update(suite.QUICK)
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "no_memory", "quick", "out",
                                                                               "no_progress", "no_plot")}
    cfg.update(given)
    import torch

    if cfg["device"] == "auto":
        cfg["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(cfg["device"]).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {cfg['device']}: this torch ({torch.__version__}) sees no CUDA device")
    if min(cfg["repeats"], cfg["slow_repeats"]) < 1:
        raise SystemExit("--repeats and --slow-repeats must be >= 1")
    return cfg


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv=None):
    args = build_parser().parse_args(argv)
    from bench import report

    if args.command in ("report", "plot"):
        from bench.engine import read_json

        for path in args.files:
            data = read_json(path)
            if args.command == "report":
                print(report.markdown(data))
            else:
                from bench.plot import plot

                for png in plot(data, os.path.splitext(path)[0]):
                    print(_show(png))
        return 0
    from bench import engine
    from bench.suites import SUITES

    suite = SUITES[args.command]
    data = engine.run(suite, config(suite, args))
    print()
    print(report.markdown(data))
    print(f"\nresults: {_show(data['path'])}")
    if not args.no_plot:
        try:
            from bench.plot import plot

            for png in plot(data, os.path.splitext(data["path"])[0]):
                print(f"plot:    {_show(png)}")
        except ImportError:
            print("plot: matplotlib is not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
