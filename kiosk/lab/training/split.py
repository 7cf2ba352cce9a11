"""Which people the model may learn from: identity-disjoint from the LFW folds we report and validate on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiosk.lab.datasets import Pair, list_identities, people_in_pairs, read_lfw_pairs


@dataclass
class TrainingSet:
    paths: list[Path]
    labels: list[int]               # identity index per image
    identities: list[str]           # "<dataset>/<person>"
    excluded_people: set[str]       # LFW names left out (reported + validation folds)
    validation_pairs: list[Pair]    # LFW pairs of the validation folds (people not trained on)


def build_training_set(dataset_dirs: list[Path], lfw_root: Path | None, pairs_file: Path | None,
                       report_folds: list[int], validation_folds: list[int]) -> TrainingSet:
    """Every image of every identity folder, minus LFW people of the reported and validation folds.

    The exclusion is by name in every dataset folder given (an LFW person can only appear under the same
    name); CelebA identities are anonymous numbers and never collide with LFW names.
    """
    excluded: set[str] = set()
    validation: list[Pair] = []
    if pairs_file is not None and lfw_root is not None:
        excluded = people_in_pairs(read_lfw_pairs(pairs_file, lfw_root, report_folds))
        validation = read_lfw_pairs(pairs_file, lfw_root, validation_folds) if validation_folds else []
        excluded |= people_in_pairs(validation)
    paths, labels, identities = [], [], []
    for root in dataset_dirs:
        root = Path(root)
        for person, images in list_identities(root).items():
            if person in excluded:
                continue
            identities.append(f"{root.name}/{person}")
            paths += images
            labels += [len(identities) - 1] * len(images)
    return TrainingSet(paths, labels, identities, excluded, validation)
