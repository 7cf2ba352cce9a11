"""The `python -m research` command line : the research beside the kiosk.

    python -m research train omniglot --out NEW.pt [--steps N] [--threads T] [--checkpoint-dir DIR] [--restart]
    python -m research evaluate oneshot [--weights FILE] [--trials 400] [--seed 0] [--no-runs] [--json OUT]
    python -m research evaluate protocol-gap [--weights FILE] [--trials 2000]     # research.protocol_gap
    python -m research evaluate site-bands [--datasets DIR]                       # research.site_rule_bands
    python -m research choose-detector [--folds 6-10] [--json OUT]                # research.choose_detector

Exit codes as the kiosk's: 0 = done, 2 = bad input, 3 = no usable weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from kiosk.cli import refuse_shipped
from kiosk.errors import KioskError, WeightsError
from kiosk.paths import cache_dir
from research import OMNIGLOT_WEIGHTS

EXIT_BAD_INPUT, EXIT_NO_WEIGHTS = 2, 3

# Commands with their own argument parsers (the former scripts): the rest of the line goes to them.
_DELEGATED = {("choose-detector",): "research.choose_detector", ("evaluate", "protocol-gap"): "research.protocol_gap",
              ("evaluate", "site-bands"): "research.site_rule_bands"}


def cmd_train_omniglot(args) -> int:
    refuse_shipped(args.out, OMNIGLOT_WEIGHTS, args.replace_shipped)
    from research.omniglot import PRESET, train_omniglot  # noqa: PLC0415 (torch only when needed)
    checkpoints = Path(args.checkpoint_dir or cache_dir() / "checkpoints" / "omniglot")
    result = train_omniglot(args.out, steps=args.steps or PRESET.steps, batch_size=PRESET.batch_size,
                            width=PRESET.width, checkpoint_dir=checkpoints, seed=args.seed, resume=not args.restart,
                            threads=args.threads)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_evaluate_oneshot(args) -> int:
    from research.omniglot import evaluate_oneshot  # noqa: PLC0415
    result = evaluate_oneshot(args.weights, trials=args.trials, seed=args.seed, runs=not args.no_runs)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m research",
                                     description="Research beside the kiosk: Koch et al.'s Omniglot experiment, "
                                                 "the detector choice")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the console too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a research model")
    tsub = p.add_subparsers(dest="preset", required=True)
    t = tsub.add_parser("omniglot", help="Koch et al.'s one-shot experiment, from scratch (docs/OMNIGLOT.md)")
    t.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    t.add_argument("--threads", type=int, help="torch threads (1 on shared cores)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, required=True, help="the new weights file")
    t.add_argument("--replace-shipped", action="store_true", help=f"allow --out to be {OMNIGLOT_WEIGHTS.name}")
    t.add_argument("--checkpoint-dir", type=Path, help="where checkpoints go (default: the kiosk cache folder)")
    t.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    t.set_defaults(func=cmd_train_omniglot)

    p = sub.add_parser("evaluate", help="evaluate a research model")
    esub = p.add_subparsers(dest="protocol", required=True)
    e = esub.add_parser("oneshot", help="Omniglot 20-way one-shot (Koch et al. 2015) and Lake's 20 runs")
    e.add_argument("--weights", type=Path, default=OMNIGLOT_WEIGHTS, help="weights file (default: %(default)s)")
    e.add_argument("--trials", type=int, default=400)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-runs", action="store_true", help="skip Lake's 20 official runs")
    e.add_argument("--json", type=Path, help="write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate_oneshot)
    esub.add_parser("protocol-gap", add_help=False,
                    help="Lake's runs against random drawings on the same alphabets (its own options: --help)")

    sub.add_parser("choose-detector", add_help=False,
                   help="which face boxes feed the landmark model, on LFW folds 6-10 (its own options: --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words, module in _DELEGATED.items():
        if tuple(argv[:len(words)]) == words:
            import importlib  # noqa: PLC0415
            return importlib.import_module(module).main(argv[len(words):])
    args = build_parser().parse_args(argv)
    previous_umask = os.umask(0o077)  # checkpoints, logs and results are owner-only, as the kiosk's
    try:
        try:
            from kiosk.logging_setup import setup_logging  # noqa: PLC0415
            setup_logging(console=args.verbose)
        except ImportError:
            logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        return args.func(args)
    except WeightsError as exc:
        print(f"python -m research: {exc}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except KioskError as exc:
        print(f"python -m research: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        os.umask(previous_umask)


if __name__ == "__main__":
    sys.exit(main())
