"""``python -m bench NAME [NAME ...] [--quick] [--tiny] [--out DIR] [--threads N] [--device DEV] [--seed S]``."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from bench import BENCHMARKS, common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="kdkit benchmarks (see bench/README.md)")
    parser.add_argument("names", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="a few steps/repeats: a smoke run, not a measurement")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random models and random token ids instead of the real offline assets")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results folder (default {common.RESULTS}; {common.SMOKE_RESULTS} with --quick/--tiny)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the named benchmarks; return the JSON path written for each."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = common.Options(quick=args.quick, tiny=args.tiny, device=args.device, seed=args.seed)
    out = args.out or (common.SMOKE_RESULTS if args.quick or args.tiny else common.RESULTS)
    print(f"[bench] {common.describe_machine(common.machine())}, device {options.device}")
    written = {}
    for name in args.names:
        print(f"[bench] {name}{' (quick)' if options.quick else ''}{' (tiny models)' if options.tiny else ''}")
        report = importlib.import_module(BENCHMARKS[name]).run(options)
        json_path, md_path = common.write_report(report, out)
        print(common.markdown_table(report.table))
        for note in report.notes:
            print(f"  {note}")
        print(f"[bench] wrote {json_path} and {md_path}")
        written[name] = json_path
    return written


if __name__ == "__main__":
    main()
