"""Walk-up identification (1:N): the in-memory index, the fusion and gap rule, the shipped calibration."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kiosk.errors import WeightsError
from kiosk.rules.identification import (
    IDENTIFY_CALIBRATION,
    REASON_NO_FACE,
    REASON_NOBODY_ENROLLED,
    REASON_NOT_RECOGNISED,
    REASON_RECOGNISED,
    GalleryIndex,
    IdentifyCalibration,
    IdentifyRule,
    euclidean_head_scorer,
    expected_fpir,
    identify,
    negative_distance_scorer,
    references_by_person,
    scorer_for,
    seal_calibration,
    similarity_scorer,
    store_fingerprint,
)
from kiosk.vision.model import SiameseNet

DIM = 128


def head_stub(weight=-10.74, bias=7.14):
    """An object with the Euclidean head's parts; the real SiameseNet code computes P(same) through it."""
    layer = torch.nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return SimpleNamespace(head="euclidean", distance_weights=layer)


def model_similarity(stub, a, b) -> np.ndarray:
    """P(same) exactly as FaceEngine.similarity computes it (SiameseNet.similarity on float32 tensors)."""
    ta = torch.as_tensor(np.atleast_2d(a), dtype=torch.float32)
    tb = torch.as_tensor(np.atleast_2d(b), dtype=torch.float32)
    with torch.inference_mode():
        return torch.sigmoid(SiameseNet.logit_from_features(stub, ta, tb)).numpy()


def features(n, seed=0):
    """dlib-like features: 128-d, norms around 1, neighbours at distances 0.3-1.0."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.09, (n, DIM))).astype(np.float32)


def engine_stub(stub=None, model_id="m1"):
    stub = stub or head_stub()
    return SimpleNamespace(model=stub, model_id=model_id, feature_dim=DIM,
                           similarity=lambda a, b: model_similarity(stub, a, b))


@pytest.fixture
def index():
    return GalleryIndex.for_engine(engine_stub())


RULE = IdentifyRule(threshold=0.6, gap=0.05)


def test_index_scores_are_the_models_p_same_with_max_over_each_persons_photos(index):
    stub = head_stub()
    gallery = {f"p{i:03d}": features(1 + i % 4, seed=i) for i in range(40)}  # 1 to 4 photos each
    index.replace_all(gallery)
    probes = np.concatenate([gallery["p007"][:1] + 0.02, features(3, seed=99)])
    people, scores = index.person_scores(probes)
    assert people == tuple(sorted(gallery)) and scores.shape == (4, 40)
    expected = np.array([[model_similarity(stub, p, gallery[pid]).max() for pid in people] for p in probes])
    assert np.abs(scores - expected).max() < 1e-5  # float32 sums in another order (the BLAS's threads)
    assert people[int(np.argmax(scores[0]))] == "p007"


def test_the_engine_similarity_fallback_gives_the_same_scores_as_the_matrix_form():
    stub = head_stub()
    gallery = {f"p{i}": features(2, seed=i) for i in range(10)}
    fast, slow = GalleryIndex(euclidean_head_scorer(-10.74, 7.14)), GalleryIndex(
        similarity_scorer(lambda a, b: model_similarity(stub, a, b)))
    for idx in (fast, slow):
        idx.replace_all(gallery)
    probe = features(2, seed=50)
    assert np.abs(fast.person_scores(probe)[1] - slow.person_scores(probe)[1]).max() < 2e-6


def test_scorer_for_an_engine_with_another_head_uses_its_similarity():
    stub = SimpleNamespace(head="weighted_l1")
    calls = []
    engine = SimpleNamespace(model=stub, similarity=lambda a, b: calls.append(1) or np.full(len(a), 0.5))
    idx = GalleryIndex(scorer_for(engine))
    idx.replace_all({"a": features(2), "b": features(1, 1)})
    assert np.allclose(idx.person_scores(features(1, 2))[1], 0.5) and calls


def test_zero_people_one_person_and_no_frames(index):
    assert index.identify(features(2), RULE).reason == REASON_NOBODY_ENROLLED
    assert len(index) == 0 and index.photos == 0
    enrolled = features(1, seed=3)
    index.set_person("solo", enrolled)
    result = index.identify(enrolled + 0.01, RULE)
    assert result.accepted and result.person_id == "solo" and result.second_id is None and result.gap is None
    assert not index.identify(features(1, seed=4), RULE).accepted  # a stranger scores under the threshold
    assert index.identify(np.zeros((0, DIM), np.float32), RULE).reason == REASON_NO_FACE


def test_ties_go_to_the_first_person_and_fail_a_gap(index):
    same = features(1, seed=5)
    index.replace_all({"b": same, "a": same.copy()})
    result = index.identify(same, IdentifyRule(0.6, 0.05))
    assert (result.person_id, result.second_id) == ("a", "b") and result.gap == 0.0
    assert not result.accepted and result.reason == REASON_NOT_RECOGNISED
    assert index.identify(same, IdentifyRule(0.6, 0.0)).accepted  # no gap asked: the tie is accepted as "a"


def test_many_photos_per_person_the_best_photo_counts(index):
    photos = features(30, seed=6)
    index.replace_all({"many": photos, "other": features(1, seed=7)})
    probe = photos[17] + 0.005
    result = index.identify(probe, RULE)
    assert result.person_id == "many" and result.accepted
    assert result.score == pytest.approx(float(model_similarity(head_stub(), probe, photos[17])[0]),
                                         abs=2e-6)


def test_rebuild_after_delete_and_re_enrol_bumps_the_generation(index):
    index.replace_all({f"p{i}": features(2, seed=i) for i in range(5)})
    g0 = index.generation
    assert index.people == ("p0", "p1", "p2", "p3", "p4")
    probe = features(2, seed=2)[0]
    assert index.identify(probe, RULE).person_id == "p2"
    assert index.remove("p2") and index.generation > g0
    assert not index.remove("p2")
    after = index.identify(probe, RULE)
    assert "p2" not in index.people and after.person_id != "p2" and not after.accepted
    assert after.generation == index.generation
    g1 = index.generation
    index.set_person("p2", features(1, seed=2)[:1])  # re-enrolled with one photo
    assert index.generation > g1 and index.photos == 9 and index.identify(probe, RULE).person_id == "p2"
    index.set_person("p2", np.zeros((0, DIM), np.float32))  # no photos left: removed
    assert "p2" not in index.people


def test_bad_features_are_refused(index):
    index.set_person("a", features(1))
    with pytest.raises(ValueError):
        index.set_person("b", np.zeros((1, 64), np.float32))
    with pytest.raises(ValueError):
        index.set_person("b", np.full((1, DIM), np.nan, np.float32))


def test_fusion_is_the_mean_of_per_frame_scores_per_person_then_the_gap():
    people = ("a", "b", "c")
    frames = np.array([[0.90, 0.80, 0.1],
                       [0.60, 0.82, 0.1],
                       [0.90, 0.81, 0.1]])
    result = identify(people, frames, IdentifyRule(0.7, 0.0))  # means: a 0.80, b 0.81, c 0.1
    assert (result.person_id, result.second_id) == ("b", "a") and result.accepted
    assert result.score == pytest.approx(0.81) and result.second_score == pytest.approx(0.80)
    fused = identify(people, frames, IdentifyRule(0.7, 0.02))
    assert fused.person_id == "b" and fused.gap == pytest.approx(0.01) and not fused.accepted
    median = identify(people, frames, IdentifyRule(0.7, 0.05), aggregate="median")
    assert median.person_id == "a" and median.score == pytest.approx(0.9) and median.accepted
    assert median.gap == pytest.approx(0.9 - 0.81) and median.reason == REASON_RECOGNISED and median.frames == 3
    with pytest.raises(ValueError):
        identify(people, frames[:, :2], RULE)


def test_rule_ranges():
    with pytest.raises(ValueError):
        IdentifyRule(1.5, 0.0)
    with pytest.raises(ValueError):
        IdentifyRule(0.7, -0.1)
    assert IdentifyRule(0.7, 0.1).accepts(0.8, 0.7) and not IdentifyRule(0.7, 0.1).accepts(0.8, 0.75)
    assert IdentifyRule(0.7, 0.1).accepts(0.8, None) and not IdentifyRule(0.7, 0.1).accepts(0.69, None)


def test_negative_distance_scorer_is_minus_the_euclidean_distance():
    g, q = features(3), features(1, seed=8)
    idx = GalleryIndex(negative_distance_scorer)
    idx.replace_all({"x": g})
    assert idx.person_scores(q)[1][0, 0] == pytest.approx(-np.linalg.norm(g - q, axis=1).min(), abs=1e-5)


def test_expected_fpir_grows_with_the_gallery():
    assert expected_fpir(0.0, 10_000) == 0.0 and expected_fpir(0.5, 0) == 0.0
    assert expected_fpir(1e-4, 1) == pytest.approx(1e-4)
    assert expected_fpir(1e-4, 1000) == pytest.approx(1 - (1 - 1e-4) ** 1000)
    assert expected_fpir(1e-6, 100) < expected_fpir(1e-6, 10_000) < expected_fpir(1e-5, 10_000)


# -- the shipped calibration -----------------------------------------------------------------------------
def test_shipped_calibration_loads_and_predicts_fewer_false_accepts_for_a_higher_threshold():
    calibration = IdentifyCalibration.load()
    assert calibration.body["calibration"]["folds"] == [6, 7, 8, 9, 10]
    t = calibration.rule.threshold
    assert calibration.expected_fpir(t, 1000) <= calibration.expected_fpir(t - 0.1, 1000)
    assert calibration.expected_fpir(t, 100) <= calibration.expected_fpir(t, 10_000)
    assert calibration.comparison_far(0.01) == 1.0


def test_a_modified_or_damaged_calibration_is_refused(tmp_path):
    data = json.loads(IDENTIFY_CALIBRATION.read_text())
    data["rule"]["threshold"] = 0.3
    target = tmp_path / "identify.json"
    target.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="integrity"):
        IdentifyCalibration.load(target)
    body = {k: v for k, v in data.items() if k != "sha256"}
    body["rule"]["threshold"] = 5.0  # resealed, but out of range
    target.write_text(json.dumps(seal_calibration(body)))
    with pytest.raises(WeightsError, match="range"):
        IdentifyCalibration.load(target)
    target.write_text("{not json")
    with pytest.raises(WeightsError):
        IdentifyCalibration.load(target)
    with pytest.raises(WeightsError, match="no identification"):
        IdentifyCalibration.load(tmp_path / "missing.json")


def test_calibration_matches_only_its_model():
    calibration = IdentifyCalibration.load()
    weight, bias = calibration.head
    assert calibration.matches(engine_stub(head_stub(weight, bias), calibration.model_id))
    assert not calibration.matches(engine_stub(head_stub(weight, bias), "another model"))
    assert not calibration.matches(engine_stub(head_stub(weight + 1, bias), calibration.model_id))


# -- with the store ---------------------------------------------------------------------------------------
def test_sync_rebuilds_from_the_store_only_when_enrolments_change(kiosk_dirs):
    from kiosk.storage import NewPhoto, Storage

    storage = Storage.open()
    try:
        store = storage.employees
        image = np.full((64, 64, 3), 128, np.uint8)
        store.enrol("E1", "Ann", [NewPhoto(image, features(1, 1)[0]), NewPhoto(image, features(1, 2)[0])], "m1")
        store.enrol("E2", "Bob", [NewPhoto(image, features(1, 3)[0])], "m1")
        store.enrol("E3", "Old", [NewPhoto(image, features(1, 4)[0])], "another model")
        index = GalleryIndex.for_engine(engine_stub(model_id="m1"))
        assert index.sync(store) and index.people == ("E1", "E2") and index.photos == 3
        assert set(references_by_person(store, "m1")) == {"E1", "E2"}
        generation = index.generation
        assert not index.sync(store) and index.generation == generation  # nothing changed: no rebuild
        assert index.identify(features(1, 2), RULE).person_id == "E1"
        fingerprint = store_fingerprint(store, "m1")
        store.delete("E1")
        assert store_fingerprint(store, "m1") != fingerprint
        assert index.sync(store) and index.people == ("E2",) and index.generation > generation
        store.enrol("E1", "Ann", [NewPhoto(image, features(1, 2)[0])], "m1")
        assert index.sync(store) and index.identify(features(1, 2), RULE).person_id == "E1"
    finally:
        storage.close()


# -- real faces --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_faces_index_equals_engine_similarity_and_identifies(trained_engine, lfw_photos):
    people = {name: [trained_engine.embed_file(p, check_quality=False) for p in lfw_photos(name)[:3]]
              for name in ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Hugo_Chavez")}
    index = GalleryIndex.for_engine(trained_engine)
    index.replace_all({name: np.stack(f[:2]) for name, f in people.items()})
    probes = np.stack([f[2] for f in people.values()])
    ids, scores = index.person_scores(probes)
    expected = np.array([[float(np.max(trained_engine.similarity(p, np.stack(people[n][:2])))) for n in ids]
                         for p in probes])
    assert np.abs(scores - expected).max() < 1e-5  # float32 sums in another order (the BLAS's threads)
    calibration = IdentifyCalibration.load()
    assert calibration.matches(trained_engine)
    for name, probe in zip(people, probes):  # each third photo, three frames of it
        result = index.identify(np.stack([probe] * 3), calibration.rule)
        assert result.person_id == name, (name, result)
    stranger = trained_engine.embed_file(lfw_photos("Serena_Williams")[0], check_quality=False)
    assert not index.identify(stranger[None], calibration.rule).accepted
