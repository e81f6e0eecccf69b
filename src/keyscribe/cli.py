"""The `keyscribe` command line. Each sub-command parses its arguments and calls the library.

Every `KeyscribeError` becomes one line on stderr and exit status 2; nothing else is caught, so a bug
still shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from keyscribe.errors import KeyscribeError

Command = Callable[[argparse.Namespace], int]


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score estimated notes against references with mir_eval")
    p.add_argument("--ref", required=True, help="folder of reference .mid/.tsv files")
    p.add_argument("--est", required=True, help="folder of estimated .mid/.tsv files, paired by stem")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--no-pedal-extend", action="store_true",
                   help="use the references' key releases instead of extending them by the pedal")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from keyscribe import evaluate
    result = evaluate.evaluate_folders(args.ref, args.est, pedal_extend=not args.no_pedal_extend)
    print(evaluate.format_table(result))
    if args.json:
        evaluate.write_json(result, args.json)
    return 0


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="statistics and key co-occurrence of a folder of MIDI/tsv")
    p.add_argument("data_dir")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from keyscribe import stats
    summary = stats.dataset_stats(args.data_dir, args.out)
    print(stats.format_summary(summary))
    return 0


COMMANDS = [_add_evaluate, _add_stats]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyscribe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyscribeError as exc:
        print(f"keyscribe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keyscribe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
