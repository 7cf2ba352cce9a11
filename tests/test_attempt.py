"""The verification service (kiosk.app.attempt) without Qt, in fake time: real LFW faces through the pretrained
encoder with dlib's 0.6 distance rule as the head (conftest's ``untrained_engine``), a real store, the audit
log, the deadline and the one threshold policy. LFW's pictures are photographs, so the matching tests run
with liveness off; liveness in the attempt is tested with NUAA webcam frames (tests/test_liveness_kiosk.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kiosk.app.attempt import VerificationService
from kiosk.app.enrolment import enrol_files
from kiosk.io.imageio import read_image
from kiosk.rules.decision import (
    FALLBACK_THRESHOLD,
    REASON_CLOSER,
    REASON_ERROR,
    REASON_MATCH,
    REASON_NO_FACE,
    REASON_NO_MATCH,
    REASON_NO_REFERENCE,
    REASON_UNKNOWN_ID,
    THRESHOLD_RANGE,
    FusionParams,
    LivenessPolicy,
    ThresholdPolicy,
)
from kiosk.storage import NewPhoto, Settings, SettingsStore, Storage

T0 = 1000.0
NO_LIVENESS = LivenessPolicy(enabled=False)  # LFW photos: see the module's docstring


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def bush_faces(untrained_engine, good_photos) -> list[np.ndarray]:
    """Aligned face crops of three Bush photos that are not his references (as the camera would give)."""
    crops = []
    for path in good_photos("George_W_Bush", 3, skip=30):
        analysis = untrained_engine.analyse(read_image(path))
        assert analysis.quality.ok and analysis.crop is not None
        crops.append(analysis.crop)
    return crops


@pytest.fixture
def storage(untrained_engine, good_photos):
    storage = Storage.open()
    enrol_files(untrained_engine, storage.employees, "BUSH", "George W. Bush", good_photos("George_W_Bush", 2))
    enrol_files(untrained_engine, storage.employees, "POWELL", "Colin Powell", good_photos("Colin_Powell", 1))
    yield storage
    storage.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(storage, untrained_engine, clock) -> VerificationService:
    return VerificationService(storage, untrained_engine, FusionParams(frames=3, window_s=4.0), clock=clock,
                               liveness=NO_LIVENESS)


def feed(service: VerificationService, clock: FakeClock, faces, step: float = 0.1):
    """Frames captured one after another, each ``step`` seconds later; the last result."""
    decision = None
    for face in faces:
        clock.now += step
        decision = service.add_frame(face, clock.now)
    return decision


def last_audit(storage: Storage):
    entry = storage.audit.entries()[0]
    return entry.claimed_id, entry.verdict, entry.reason, entry.score


@pytest.mark.slow
def test_accepts_after_n_good_frames_with_the_name_and_an_audit_entry(service, storage, clock, bush_faces):
    assert service.begin("  BUSH ") is None and service.active and service.claimed_id == "BUSH"
    assert service.progress == (0, 3)
    assert feed(service, clock, bush_faces[:2]) is None and service.progress == (2, 3)
    assert storage.audit.entries() == []  # nothing decided, nothing logged yet
    decision = feed(service, clock, bush_faces[2:])
    assert (decision.verdict, decision.reason, decision.name) == ("ACCEPT", REASON_MATCH, "George W. Bush")
    assert len(decision.frame_scores) == 3 and decision.score == pytest.approx(np.mean(decision.frame_scores))
    assert decision.score >= decision.threshold == 0.5  # the model's default: nothing saved
    assert not service.active
    assert last_audit(storage) == ("BUSH", "ACCEPT", REASON_MATCH, pytest.approx(decision.score))


@pytest.mark.slow
def test_another_persons_face_is_rejected_without_a_name(service, storage, clock, bush_faces):
    """Bush is enrolled too: claiming Powell's ID, his face is closer to his own references (the insider check),
    and the audit names him for the admin."""
    assert service.begin("POWELL") is None
    decision = feed(service, clock, bush_faces)
    assert (decision.verdict, decision.reason, decision.name) == ("REJECT", REASON_CLOSER, None)
    assert decision.score < decision.threshold and len(decision.frame_scores) == 3
    assert decision.rival_id == "BUSH" and decision.rival_score > decision.score
    assert last_audit(storage) == ("POWELL", "REJECT", REASON_CLOSER, pytest.approx(decision.score))
    assert storage.audit.entries()[0].detail.startswith("closer to BUSH (P ")


@pytest.mark.slow
def test_a_stranger_is_judged_by_the_threshold(service, storage, clock, bush_faces):
    """Without Bush enrolled, his face claiming Powell's ID has nobody closer: the threshold refuses it."""
    storage.employees.delete("BUSH")
    assert service.begin("POWELL") is None
    decision = feed(service, clock, bush_faces)
    assert (decision.verdict, decision.reason, decision.rival_id) == ("REJECT", REASON_NO_MATCH, None)
    assert decision.score < decision.threshold


@pytest.mark.slow
def test_unknown_id_is_rejected_at_once_and_logged(service, storage):
    decision = service.begin("NOBODY-42")
    assert (decision.verdict, decision.reason, decision.score, decision.name) == ("REJECT", REASON_UNKNOWN_ID,
                                                                                 None, None)
    assert not service.active
    assert last_audit(storage) == ("NOBODY-42", "REJECT", REASON_UNKNOWN_ID, None)


@pytest.mark.slow
def test_an_employee_without_a_reference_for_this_model_is_asked_to_re_enrol(service, storage, good_photos):
    photo = read_image(good_photos("Tony_Blair", 1)[0])
    storage.employees.enrol("OLD", "Tony Blair", [NewPhoto(photo, np.ones(128, np.float32))], "an-older-model")
    decision = service.begin("OLD")
    assert (decision.verdict, decision.reason, decision.score) == ("REJECT", REASON_NO_REFERENCE, None)
    assert last_audit(storage) == ("OLD", "REJECT", REASON_NO_REFERENCE, None)


@pytest.mark.slow
def test_the_deadline_without_a_usable_face_rejects_and_late_frames_do_not_count(service, storage, clock, bush_faces):
    assert service.begin("BUSH") is None
    assert service.remaining() == pytest.approx(4.0)
    assert feed(service, clock, [None] * 5, step=0.5) is None  # frames without a good face: no score
    assert service.progress == (0, 3) and service.remaining() == pytest.approx(1.5)
    assert service.expire() is None  # not yet
    clock.now = T0 + 4.5
    assert not service.wants(clock.now)  # captured after the deadline
    decision = service.add_frame(bush_faces[0], clock.now)  # a good face, but too late: the deadline decides
    assert (decision.verdict, decision.reason, decision.score, decision.frame_scores) == ("REJECT", REASON_NO_FACE,
                                                                                         None, ())
    assert not service.active and service.remaining() is None
    assert last_audit(storage) == ("BUSH", "REJECT", REASON_NO_FACE, None)


@pytest.mark.slow
def test_the_deadline_decides_on_the_frames_collected_so_far(service, clock, bush_faces):
    service.begin("BUSH", started_at=T0)
    assert feed(service, clock, bush_faces[:1]) is None
    clock.now = T0 + 4.0
    decision = service.expire()
    assert decision.verdict == "ACCEPT" and len(decision.frame_scores) == 1 and decision.name == "George W. Bush"


@pytest.mark.slow
def test_frames_from_before_the_id_was_entered_do_not_count(service, clock, bush_faces):
    service.begin("BUSH", started_at=T0 + 1.0)
    assert service.add_frame(bush_faces[0], T0 + 0.5) is None and service.progress == (0, 3)


@pytest.mark.slow
def test_a_technical_failure_mid_attempt_is_a_logged_reject_and_cancel_logs_nothing(service, storage, clock):
    service.begin("BUSH")
    decision = service.fail()
    assert (decision.verdict, decision.reason) == ("REJECT", REASON_ERROR) and not service.active
    assert last_audit(storage) == ("BUSH", "REJECT", REASON_ERROR, None)
    service.begin("BUSH")
    service.cancel()
    assert not service.active and service.fail() is None and len(storage.audit.entries()) == 1


@pytest.mark.slow
def test_a_failing_audit_log_is_reported_and_the_verdict_still_given(storage, untrained_engine, clock, monkeypatch):
    problems: list[str] = []
    service = VerificationService(storage, untrained_engine, clock=clock, report=problems.append,
                                  liveness=NO_LIVENESS)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.audit, "record", broken)
    assert service.begin("NOBODY").reason == REASON_UNKNOWN_ID
    assert problems == ["the audit log could not be written: disk full"]


@pytest.mark.slow
def test_the_saved_threshold_overrides_the_model_default_for_the_next_attempt(service, clock, bush_faces):
    service.begin("BUSH")
    accepted = feed(service, clock, bush_faces)
    assert accepted.accepted and accepted.threshold == 0.5
    service.set_threshold(THRESHOLD_RANGE[1])  # the admin's slider, all the way up
    service.begin("BUSH")
    strict = feed(service, clock, bush_faces)
    assert (strict.verdict, strict.reason, strict.threshold) == ("REJECT", REASON_NO_MATCH, THRESHOLD_RANGE[1])
    assert strict.score == pytest.approx(accepted.score, abs=1e-6) and strict.name is None
    service.set_threshold(None)  # back to the model's own
    assert service.threshold == 0.5


def test_threshold_policy_settings_first_then_the_model_out_of_range_ignored():
    assert ThresholdPolicy(None).threshold(0.624) == 0.624
    assert ThresholdPolicy(0.7).threshold(0.624) == 0.7 and not ThresholdPolicy(0.7).follows_model()
    for bad in (1.5, 0.0, THRESHOLD_RANGE[0] - 0.01, True, "0.7", float("nan")):
        assert ThresholdPolicy(bad).threshold(0.624) == 0.624 and ThresholdPolicy(bad).follows_model(), bad
    assert ThresholdPolicy(None).threshold(None) == FALLBACK_THRESHOLD  # no model loaded (display only)
    assert ThresholdPolicy(0.7).threshold(None) == 0.7


def test_settings_take_the_fusion_defaults_and_limits_from_decision(kiosk_dirs):
    assert Settings().fusion == FusionParams()
    store = SettingsStore()
    store.update(fusion_frames=5, fusion_window_s=2.0, fusion_aggregate="median")
    assert store.load().fusion == FusionParams(5, 2.0, "median")
    for name, bad in (("frames", 0), ("frames", 21), ("frames", 2.5), ("window_s", 0.1), ("window_s", 61),
                      ("aggregate", "max")):
        assert not FusionParams.valid(name, bad)
        with pytest.raises(ValueError):
            FusionParams(**{name: bad})
        assert getattr(Settings(**{f"fusion_{name}": bad}).validated(), f"fusion_{name}") == getattr(FusionParams(),
                                                                                                      name)


@pytest.mark.slow
def test_the_service_does_not_import_qt():
    code = "import sys, kiosk.app.attempt; sys.exit('PySide6' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
