"""Training machinery on real faces: Koch's pair loss falls; the shipped weights keep their accuracy."""

import numpy as np
import pytest
import torch
from helpers import LFW, LFW_PAIRS, needs_lfw, needs_weights

from kiosk.datasets import list_identities, read_lfw_pairs
from kiosk.facecache import build_face_cache
from kiosk.metrics import fold_accuracy
from kiosk.model import SiameseNet
from kiosk.preprocess import InputSpec, crop_face, to_network_input
from kiosk.training.augment import augment_batch, augmented_views
from kiosk.training.face import BatchSampler, pair_loss
from kiosk.training.split import build_training_set
from kiosk.training.teacher import TEACHER_SIDE, face_box_in_crop


@needs_lfw
def test_training_set_excludes_every_person_of_the_reported_folds():
    ts = build_training_set([LFW], LFW, LFW_PAIRS, [1, 2, 3, 4, 5], [10])
    reported = {p.parent.name for pair in read_lfw_pairs(LFW_PAIRS, LFW, [1, 2, 3, 4, 5]) for p in (pair.left, pair.right)}
    trained = {p.parent.name for p in ts.paths}
    assert reported and not (reported & trained)
    assert not ({p.parent.name for pair in ts.validation_pairs for p in (pair.left, pair.right)} & trained)


@needs_lfw
def test_a_few_training_steps_make_kochs_pair_loss_fall():
    torch.manual_seed(0)
    people = [name for name, images in list_identities(LFW).items() if len(images) >= 6][:12]
    paths, labels = [], []
    for k, name in enumerate(people):
        images = sorted((LFW / name).glob("*.jpg"))[:6]
        paths += images
        labels += [k] * len(images)
    spec = InputSpec()
    crops = build_face_cache(paths, spec, use_disk=False).crops
    labels = np.array(labels)
    model = SiameseNet("compact", {"widths": [16, 32, 48, 64], "feature_dim": 64})
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    sampler = BatchSampler(labels, identities_per_batch=12, extra_images=24)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    held_idx = sampler.sample(rng)  # one fixed batch: its loss is measured before and after training

    def held_loss():
        with torch.no_grad():
            f = model.embed(torch.from_numpy(to_network_input(crops[held_idx])))
            return pair_loss(model, f, torch.from_numpy(labels[held_idx]), 24, False, torch.Generator().manual_seed(1)).item()

    model.eval()
    before = held_loss()
    # Train on the held batch itself (can the objective fit one batch?), lightly augmented.
    for _ in range(60):
        x = augment_batch(torch.from_numpy(to_network_input(crops[held_idx])), generator, 0.2)
        model.train()
        loss = pair_loss(model, model.embed(x), torch.from_numpy(labels[held_idx]), 24, hard=False, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    after = held_loss()
    assert after < 0.8 * before, (before, after)


def fixed_subset(pairs, per_fold_half=120):
    """1,200 pairs: the first 120 matched and 120 mismatched pairs of each of folds 1-5."""
    subset = []
    for fold in range(1, 6):
        fold_pairs = [p for p in pairs if p.fold == fold]
        subset += [p for p in fold_pairs if p.same][:per_fold_half] + [p for p in fold_pairs if not p.same][:per_fold_half]
    return subset


@needs_lfw
@needs_weights
def test_shipped_weights_keep_their_accuracy_on_1200_lfw_pairs():
    from kiosk.engine import FaceEngine
    from kiosk.evaluation import score_pairs_ours
    pairs = fixed_subset(read_lfw_pairs(LFW_PAIRS, LFW, [1, 2, 3, 4, 5]))
    assert len(pairs) == 1200
    scores, stats = score_pairs_ours(FaceEngine(), pairs)
    accuracy, _, _ = fold_accuracy(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    assert accuracy >= ACCURACY_FLOOR, f"accuracy {accuracy:.4f} fell below {ACCURACY_FLOOR}"


ACCURACY_FLOOR = 0.86  # measured 0.8842 on these 1,200 pairs (weights/MODEL_CARD.md)


def test_the_teacher_is_told_where_the_crop_put_the_face():
    # A bright square where the detector's box is: in the enlarged crop it must sit where the teacher is told.
    image = np.zeros((300, 400, 3), np.uint8)
    box = (150, 80, 90, 90)
    image[80:170, 150:240] = 255
    spec = InputSpec()
    crop = crop_face(image, box, spec, out_size=TEACHER_SIDE)
    rows, cols = np.nonzero(crop[..., 0] > 127)
    top, right, bottom, left = face_box_in_crop(spec, TEACHER_SIDE)
    assert abs(rows.min() - top) <= 2 and abs(rows.max() + 1 - bottom) <= 2
    assert abs(cols.min() - left) <= 2 and abs(cols.max() + 1 - right) <= 2


def test_augmented_views_are_fixed_by_the_seed_and_differ_from_the_photo():
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    views = augmented_views(crops, 2, seed=0)
    assert views.shape == (2, 5, 64, 64, 3) and views.dtype == np.uint8
    assert np.array_equal(views, augmented_views(crops, 2, seed=0))
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[0], crops)
