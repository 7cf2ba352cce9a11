"""Where the site rules' numbers would have to lie to meet issue #21's bars, and whether validation people can find them.

Plays the sites of ``kiosk evaluate site`` (one reference, attempts of 3 frames, a fifth of the people outsiders,
5 rotations) on LFW folds 6-10 (validation), NUAA live, LFW folds 1-5 and the CelebA subset, and sweeps two
outsider rules on top of the site threshold and the insider check:

* ``z``: each employee's own threshold, mean + z sd of their colleagues' logits (Z-norm; the shipped rule);
* ``tau``: the attempt's own normalisation (T-norm), the claimed logit at least tau sd above the attempt's logits
  against the other enrolled people.

It prints genuine / insider / outsider accept (%) per population for each value. It reads only the kiosk's
cached features (``kiosk evaluate site`` fills the cache). Research: the product never imports it.

    python -m research evaluate site-bands [--datasets DIR]     (or: python -m research.site_rule_bands)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kiosk.lab.site_eval import _gallery, lfw_fold_people, site_people
from kiosk.paths import datasets_dir
from kiosk.rules.decision import logit
from kiosk.rules.identification import scorer_for
from kiosk.rules.site import SiteRuleFile, measure_site, sigmoid
from kiosk.vision.engine import FaceEngine

Z_VALUES = (None, 1.6, 1.8, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6)
TAU_VALUES = (1.5, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0)


def attempts(people, engine, rule, rotations: int = 5, seed: int = 0) -> list[dict]:
    """Per site: the fused scores of every attempt against everyone enrolled, and the site's calibration."""
    scorer, sites = scorer_for(engine), []
    order = np.random.default_rng(seed).permutation(len(people))
    for r in range(rotations):
        out = {people[i].name for i in order[r::rotations]}
        enrolled = [p for p in people if p.name not in out]
        gallery = _gallery(scorer, enrolled)
        site = measure_site(gallery, rule)
        ids = gallery.snapshot().ids
        rows = []
        for person in people:
            owner = -1 if person.name in out else ids.index(person.name)
            for attempt in (person.all_attempts if owner < 0 else person.attempts):
                rows.append((owner, gallery.person_scores(attempt)[1].mean(axis=0)))
        sites.append({"site": site, "ids": ids, "rows": rows})
    return sites


def rates(sites, threshold: float, z: float | None = None, tau: float | None = None) -> tuple[float, float, float]:
    """(genuine, insider, outsider accept) with the site threshold, the insider check and one outsider rule."""
    counts = np.zeros((3, 2))
    for s in sites:
        site, ids = s["site"], s["ids"]
        floor = site.in_force(threshold)
        own = np.array([site.person_mean[i] for i in ids]), np.array([site.person_sd[i] for i in ids])
        limit = np.maximum(floor, sigmoid(own[0] + z * own[1])) if z is not None else np.full(len(ids), floor)
        for owner, fused in s["rows"]:
            n = len(fused)
            accept = (fused >= limit) & (np.arange(n) == np.argmax(fused))
            if tau is not None:
                x = logit(fused)
                mean = (x.sum() - x) / (n - 1)
                var = ((x * x).sum() - x * x) / (n - 1) - mean ** 2
                accept &= (x - mean) / np.sqrt(np.maximum(var * (n - 1) / max(n - 2, 1), 1e-9)) >= tau
            kind = np.where(np.arange(n) == owner, 0, 1) if owner >= 0 else np.full(n, 2)
            np.add.at(counts, (kind, 0), accept)
            np.add.at(counts, (kind, 1), 1)
    return tuple(100 * counts[:, 0] / counts[:, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research evaluate site-bands", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=datasets_dir())
    args = parser.parse_args(argv)
    engine, rule = FaceEngine(), SiteRuleFile.load().rule
    lfw, pairs = args.datasets / "lfw" / "lfw-deepfunneled", args.datasets / "lfw" / "pairs.txt"
    populations = {"LFW 6-10 (validation)": site_people(lfw, engine, only=lfw_fold_people(pairs, lfw, [6, 7, 8, 9, 10])),
                   "NUAA": site_people(args.datasets / "nuaa" / "live", engine),
                   "LFW 1-5": site_people(lfw, engine, only=lfw_fold_people(pairs, lfw, [1, 2, 3, 4, 5])),
                   "CelebA": site_people(args.datasets / "celeba-subset", engine)}
    played = {name: attempts(people, engine, rule) for name, people in populations.items()}
    print("genuine / insider / outsider accept (%), one reference, attempts of 3 frames")
    print(f"{'rule':<14}" + "".join(f"{name:>26}" for name in played))
    cell = lambda g, i, o: f"{g:6.2f} {i:5.2f} {o:5.2f}"  # noqa: E731
    t = engine.default_threshold
    print(f"{'today':<14}" + "".join(f"{cell(*today(s, t)):>26}" for s in played.values()))
    for z in Z_VALUES:
        print(f"{'z ' + str(z):<14}" + "".join(f"{cell(*rates(s, t, z=z)):>26}" for s in played.values()))
    for tau in TAU_VALUES:
        print(f"{'tau ' + str(tau):<14}" + "".join(f"{cell(*rates(s, t, tau=tau)):>26}" for s in played.values()))
    return 0


def today(sites, threshold: float) -> tuple[float, float, float]:
    """Today's rule: one global threshold, no insider check."""
    counts = np.zeros((3, 2))
    for s in sites:
        for owner, fused in s["rows"]:
            n = len(fused)
            kind = np.where(np.arange(n) == owner, 0, 1) if owner >= 0 else np.full(n, 2)
            np.add.at(counts, (kind, 0), fused >= threshold)
            np.add.at(counts, (kind, 1), 1)
    return tuple(100 * counts[:, 0] / counts[:, 1])


if __name__ == "__main__":
    raise SystemExit(main())
