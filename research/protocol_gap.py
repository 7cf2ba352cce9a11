"""Why Lake's official runs score higher than our 400-trial 20-way test: the same weights, the same
alphabets, two ways of choosing the drawings.

Lake's runs take all 20 support drawings from one drawer and all queries from another (as Koch et al.'s
400 trials did). This copy of Omniglot lost the drawer numbers, so our trials pair random drawings.
The script finds the alphabet of each run (its drawings also appear in images_evaluation) and scores,
on exactly those alphabets, (a) Lake's runs and (b) random-drawing episodes.

    python -m research evaluate protocol-gap [--weights weights/characters_siamese.pt] [--trials 2000]
    (or: python -m research.protocol_gap ...)
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from kiosk.vision.weights import load_weights
from research import OMNIGLOT_WEIGHTS
from research.omniglot import (
    DrawingInput,
    episode_accuracy,
    load_official_runs,
    load_omniglot,
    make_episodes,
    official_runs_accuracy,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research evaluate protocol-gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=OMNIGLOT_WEIGHTS)
    parser.add_argument("--trials", type=int, default=2000, help="random-drawing trials on the runs' alphabets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    model, spec, metadata = load_weights(args.weights)
    model.eval()
    drawing = DrawingInput.of_weights(spec, metadata)
    evaluation = load_omniglot("evaluation")
    row_of = {evaluation.images[i].tobytes(): i for i in range(len(evaluation))}
    runs = load_official_runs()

    by_alphabet: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in runs:
        row = row_of[run.support[0].tobytes()]
        alphabet = evaluation.alphabets[evaluation.char_alphabet[evaluation.labels[row]]]
        correct, total = official_runs_accuracy(model, drawing, [run])
        by_alphabet[alphabet][0] += correct
        by_alphabet[alphabet][1] += total

    print(f"{'alphabet':34s} {'Lake runs (2 drawers)':>22s} {'random drawings':>16s}")
    runs_total = np.zeros(2, int)     # correct, trials
    random_total = np.zeros(2, int)
    for alphabet, (correct, total) in sorted(by_alphabet.items()):
        subset = evaluation.subset([alphabet])
        episodes = make_episodes(subset, args.trials // len(by_alphabet), args.seed)
        r_correct, r_total = episode_accuracy(model, subset, episodes, drawing)
        runs_total += (correct, total)
        random_total += (r_correct, r_total)
        print(f"{alphabet:34s} {correct / total:>22.1%} {r_correct / r_total:>16.1%}")
    print(f"{'all ' + str(len(by_alphabet)) + ' alphabets':34s} {runs_total[0] / runs_total[1]:>22.1%} "
          f"{random_total[0] / random_total[1]:>16.1%}   ({runs_total[1]} / {random_total[1]} trials)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
