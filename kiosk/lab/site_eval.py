"""``kiosk evaluate site``: play whole sites from a folder of people, with the kiosk's own rules. Qt-free.

The protocol (issue #21): ``root/<person>/<photo>``, photos in name order. Each person's usable photos (a face
passing the kiosk's quality checks, through ``FaceEngine.analyse``) are split into their first ``references``
(enrolled) and the rest, cut into attempts of ``frames`` consecutive photos (the camera frames of one visit). A
fraction ``outsiders`` of the people (a seeded permutation) is never enrolled; the sites rotate so that everyone
is an outsider once (``round(1 / outsiders)`` sites). At each site:

* genuine: an enrolled person claims their own ID;
* insider: an enrolled person claims every other enrolled person's ID (a borrowed badge);
* outsider: an outsider claims every enrolled ID (a stolen badge);
* walk-up: every attempt without an ID, searched among the enrolled (right person, wrong person, an outsider let in).

Each attempt is judged by THE rules the kiosk uses (``kiosk.rules.decision.decide`` with the insider check,
``kiosk.rules.site.measure_site`` for the site threshold, ``kiosk.rules.identification.identify`` for walk-ups) on scores of the
kiosk's gallery index, and, side by side, by today's rule: one global threshold, no insider check, no site
threshold. Liveness is not part of this protocol (kiosk evaluate liveness measures it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.errors import DatasetError, KioskError
from kiosk.io.imageio import read_image
from kiosk.lab.diskcache import cache_path, load_arrays, save_arrays
from kiosk.rules.decision import decide, logit
from kiosk.rules.identification import GalleryIndex, IdentifyRule, identify
from kiosk.rules.site import SiteCalibration, SiteRule, judge_walk_up, measure_site

log = logging.getLogger(__name__)

RULES = ("today", "site")  # one global threshold / the site rules


def kiosk_features(engine, paths: list[Path], desc: str = "faces") -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), usable (N,)): each photo as the kiosk sees a camera frame (detect, quality, align,
    embed), cached on disk per model."""
    target = cache_path("site-features", (engine.model_id, [str(p) for p in paths]))
    cached = load_arrays(target, ("features", "usable"))
    if cached is not None:
        return cached["features"], cached["usable"]
    features = np.zeros((len(paths), engine.feature_dim), np.float32)
    usable = np.zeros(len(paths), bool)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False, mininterval=5)):
        try:
            analysis = engine.analyse(read_image(path))
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        if analysis.crop is not None and analysis.quality.ok:
            features[i] = engine.embed_crops(analysis.crop[None])[0]
            usable[i] = True
    save_arrays(target, features=features, usable=usable)
    return features, usable


@dataclass
class Person:
    name: str
    references: np.ndarray         # (r, D)
    attempts: list[np.ndarray]     # each (frames, D), after the references
    all_attempts: list[np.ndarray]  # each (frames, D), from the first photo (as an outsider)


def people_from_features(people: dict[str, list[int]], features: np.ndarray, usable: np.ndarray, references: int,
                         frames: int) -> list[Person]:
    """People with at least ``references + frames`` usable photos, split into references and attempts."""
    out = []
    for name, rows in people.items():
        good = [i for i in rows if usable[i]]
        if len(good) < references + frames:
            continue
        chunks = lambda idx: [features[idx[k:k + frames]] for k in range(0, len(idx) - frames + 1, frames)]  # noqa: E731
        out.append(Person(name, features[good[:references]], chunks(good[references:]), chunks(good)))
    return out


@dataclass
class Tally:
    """Counts of one rule over all sites."""

    genuine: int = 0
    genuine_ok: int = 0
    insider: int = 0
    insider_ok: int = 0
    outsider: int = 0
    outsider_ok: int = 0
    walk_enrolled: int = 0
    walk_right: int = 0
    walk_wrong: int = 0
    walk_outsider: int = 0
    walk_outsider_ok: int = 0

    def rates(self) -> dict:
        r = lambda a, b: a / b if b else None  # noqa: E731
        return {"genuine_accept": r(self.genuine_ok, self.genuine), "insider_accept": r(self.insider_ok, self.insider),
                "outsider_accept": r(self.outsider_ok, self.outsider),
                "walkup_right": r(self.walk_right, self.walk_enrolled),
                "walkup_wrong_person": r(self.walk_wrong, self.walk_enrolled),
                "walkup_outsider_accept": r(self.walk_outsider_ok, self.walk_outsider),
                "counts": {"genuine": [self.genuine_ok, self.genuine], "insider": [self.insider_ok, self.insider],
                           "outsider": [self.outsider_ok, self.outsider],
                           "walkup_right": [self.walk_right, self.walk_enrolled],
                           "walkup_wrong_person": [self.walk_wrong, self.walk_enrolled],
                           "walkup_outsider": [self.walk_outsider_ok, self.walk_outsider]}}


def _gallery(engine_scorer, enrolled: list[Person]) -> GalleryIndex:
    gallery = GalleryIndex(engine_scorer)
    gallery.replace_all({p.name: p.references for p in enrolled})
    return gallery


def _claims(tally: dict[str, Tally], ids: tuple[str, ...], fused: np.ndarray, frame_scores: np.ndarray,
            owner: str | None, threshold: float, site: SiteCalibration, walk_rule: IdentifyRule,
            margins: dict | None = None) -> None:
    """One attempt (fused (P,) per person, frame_scores (F, P)) claiming every enrolled ID, and as a walk-up."""
    kind = "outsider" if owner is None else None
    order = np.argsort(-fused, kind="stable")
    best, second = int(order[0]), (int(order[1]) if len(order) > 1 else None)
    for j, claimed in enumerate(ids):
        rival_col = second if j == best else best
        rival = (ids[rival_col], float(fused[rival_col])) if rival_col is not None else None
        k = kind or ("genuine" if claimed == owner else "insider")
        today = decide(claimed, frame_scores[:, j], threshold, fused=float(fused[j]))
        in_force = site.threshold_for(claimed, threshold)
        ours = decide(claimed, frame_scores[:, j], in_force, fused=float(fused[j]), rival=rival,
                      margin=site.rule.insider_margin)
        for rule, decision in (("today", today), ("site", ours)):
            t = tally[rule]
            setattr(t, k, getattr(t, k) + 1)
            setattr(t, k + "_ok", getattr(t, k + "_ok") + int(decision.accepted))
        if margins is not None and k == "genuine" and fused[j] >= site.in_force(threshold) and rival is not None:
            margins.setdefault("genuine", []).append(float(logit(fused[j]) - logit(rival[1])))
            if site.fitted and site.person_sd.get(claimed):
                margins.setdefault("genuine_z", []).append(
                    (float(logit(fused[j])) - site.person_mean[claimed]) / site.person_sd[claimed])
    site_walk = IdentifyRule(site.in_force(walk_rule.threshold), walk_rule.gap)
    for rule, walk in (("today", walk_rule), ("site", site_walk)):
        found = identify(ids, frame_scores, walk)
        if rule == "site":
            found = judge_walk_up(found, site, walk.threshold)
        t = tally[rule]
        if owner is None:
            t.walk_outsider += 1
            t.walk_outsider_ok += int(found.accepted)
        else:
            t.walk_enrolled += 1
            t.walk_right += int(found.accepted and found.person_id == owner)
            t.walk_wrong += int(found.accepted and found.person_id != owner)


def play_sites(people: list[Person], scorer, threshold: float, walk_rule: IdentifyRule, rule: SiteRule,
               outsiders: float = 0.2, seed: int = 0, margins: dict | None = None, pair_scores: list | None = None
               ) -> tuple[dict[str, Tally], list[dict]]:
    """Every site of the rotation; (tallies per rule, one description per site)."""
    if len(people) < 2:
        raise DatasetError(f"a site needs at least 2 people with enough usable photos; found {len(people)}")
    k = max(1, round(1 / outsiders)) if outsiders > 0 else 1
    order = np.random.default_rng(seed).permutation(len(people))
    tally = {r: Tally() for r in RULES}
    sites = []
    for rotation in range(k):
        out = {people[i].name for i in order[rotation::k]} if outsiders > 0 else set()
        enrolled = [p for p in people if p.name not in out]
        gallery = _gallery(scorer, enrolled)
        site = measure_site(gallery, rule)
        if pair_scores is not None:  # each reference photo against every other person
            ids, s = gallery.person_scores(np.concatenate([p.references for p in enrolled]))
            owner = np.repeat([ids.index(p.name) for p in enrolled], [len(p.references) for p in enrolled])
            mask = np.ones(s.shape, bool)
            mask[np.arange(len(s)), owner] = False
            pair_scores.append(s[mask])
        sites.append({"enrolled": len(enrolled), "outsiders": sorted(out), "site_threshold": site.threshold,
                      "fitted": site.fitted, "comparisons": site.comparisons,
                      "threshold_in_force": site.in_force(threshold)})
        for person in enrolled + [p for p in people if p.name in out]:
            owner = None if person.name in out else person.name
            for attempt in (person.attempts if owner else person.all_attempts):
                ids, frame_scores = gallery.person_scores(attempt)
                _claims(tally, ids, frame_scores.mean(axis=0), frame_scores, owner, threshold, site, walk_rule,
                        margins)
    return tally, sites


def site_people(root: str | Path, engine, references: int = 1, frames: int = 3, max_photos: int = 100,
                only: set[str] | None = None) -> list[Person]:
    """The people of ``root`` (one folder each; ``only``: just these), at most ``max_photos`` photos each."""
    from kiosk.lab.datasets import list_identities
    listed = {name: photos[:max_photos] for name, photos in list_identities(root).items()
              if (only is None or name in only) and len(photos) >= references + frames}
    paths, rows = [], {}
    for name, photos in listed.items():
        rows[name] = list(range(len(paths), len(paths) + len(photos)))
        paths += photos
    features, usable = kiosk_features(engine, paths, desc=Path(root).name)
    return people_from_features(rows, features, usable, references, frames)


def lfw_fold_people(pairs_file: str | Path, root: str | Path, folds: list[int]) -> set[str]:
    """The people of these LFW folds who appear in no other fold (folds 1-5 are for reporting only)."""
    from kiosk.lab.datasets import people_in_pairs, read_lfw_pairs
    others = [f for f in range(1, 11) if f not in folds]
    return people_in_pairs(read_lfw_pairs(pairs_file, root, folds)) - people_in_pairs(read_lfw_pairs(pairs_file, root, others))


def evaluate_site(engine, people: list[Person], rule: SiteRule, walk_rule: IdentifyRule, outsiders: float = 0.2,
                  seed: int = 0) -> dict:
    """The protocol's figures for today's rule and the site rules, side by side."""
    from kiosk.rules.identification import scorer_for
    tally, sites = play_sites(people, scorer_for(engine), engine.default_threshold, walk_rule, rule, outsiders, seed)
    result = {rule_name: t.rates() for rule_name, t in tally.items()}
    ours = result["site"]
    return dict({k: v for k, v in ours.items() if k != "counts"}, people=len(people),
                attempts=sum(len(p.attempts) for p in people), counts=ours["counts"], today=result["today"],
                sites=sites, rule=rule.to_dict(), threshold=engine.default_threshold,
                walk_up_rule={"threshold": walk_rule.threshold, "gap": walk_rule.gap}, outsiders=outsiders, seed=seed)


MARGIN_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.05), 2))
Z_GRID = tuple(np.round(np.arange(0.0, 6.01, 0.1), 1))


def calibrate_site(engine, people: list[Person], walk_rule: IdentifyRule, target_far: float = 0.01,
                   min_people: int = 5, genuine_loss: float = 0.0025, fallback_far: float = 0.001,
                   outsiders: float = 0.2, seed: int = 0) -> SiteRule:
    """The site rule's numbers from calibration people (LFW folds 6-10), each the strictest on its grid that
    refuses at most ``genuine_loss`` of the genuine attempts the site threshold accepts: the insider margin
    (logits), then each employee's own threshold (``person_z``, among those the margin keeps); the fallback
    threshold is the pair score exceeded by ``fallback_far`` of those people's reference pairs."""
    from kiosk.rules.identification import scorer_for
    margins: dict = {}
    pairs: list = []
    play_sites(people, scorer_for(engine), engine.default_threshold, walk_rule,
               SiteRule(target_far, min_people, 0.0, None, 0.0), outsiders, seed, margins, pairs)
    genuine = np.asarray(margins.get("genuine", []))
    z = np.asarray(margins.get("genuine_z", []))
    if not len(genuine) or len(z) != len(genuine):
        raise DatasetError("no genuine attempts (at sites of enough people) to calibrate the site rule on")
    margin = max([m for m in MARGIN_GRID if np.mean(genuine < m) <= genuine_loss] or [0.0])
    kept = z[genuine >= margin]
    person_z = max([t for t in Z_GRID if np.mean(kept < t) <= genuine_loss] or [0.0])
    impostor = np.concatenate(pairs)
    fallback = float(np.quantile(impostor, 1 - fallback_far))
    return SiteRule(target_far, min_people, float(margin), round(fallback, 6), float(person_z))


def print_site_report(result: dict) -> None:
    keys = ["genuine_accept", "insider_accept", "outsider_accept", "walkup_right", "walkup_wrong_person",
            "walkup_outsider_accept"]
    print(f"{'':<24}{'today (one threshold)':>24}{'site rules':>16}{'counts (site rules)':>24}")
    for key in keys:
        count_key = {"walkup_outsider_accept": "walkup_outsider"}.get(key, key.replace("_accept", ""))
        ok, n = result["counts"][count_key]
        cell = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
        print(f"{key:<24}{cell(result['today'][key]):>24}{cell(result[key]):>16}{f'{ok} / {n}':>24}")
    print(f"{result['people']} people, {result['attempts']} attempts of enrolled people; {len(result['sites'])} "
          f"sites (a fraction {result['outsiders']:g} of the people outsiders at each); global threshold "
          f"{result['threshold']:.4f}; site threshold at each site: "
          + ", ".join(f"{s['site_threshold'] or 0:.3f}{'' if s['fitted'] else ' (fallback)'}" for s in result["sites"]))
