"""Walk-ups (1:N) in the verification service, in fake time: real LFW faces through the shipped model and the
shipped 1:N rule (weights/identify.json), a real store and the audit log. LFW's pictures are photographs, so
liveness is off here (tests/test_liveness_kiosk.py covers it); the kiosk window's walk-up mode is tested in
tests/test_walk_up_kiosk.py."""

from __future__ import annotations

import numpy as np
import pytest

from kiosk.app.attempt import VerificationService
from kiosk.app.enrolment import enrol_files
from kiosk.io.imageio import read_image
from kiosk.rules.decision import (
    MODE_ID,
    MODE_WALK_UP,
    REASON_MATCH,
    REASON_NO_FACE,
    REASON_NO_WALK_UP,
    FusionParams,
    LivenessPolicy,
)
from kiosk.rules.identification import REASON_NOBODY_ENROLLED, REASON_NOT_RECOGNISED, REASON_RECOGNISED
from kiosk.storage import KIND_DECISION, Storage

pytestmark = pytest.mark.slow  # the shipped model on LFW faces, every test

ENROLLED = {"BUSH": "George_W_Bush", "POWELL": "Colin_Powell", "BLAIR": "Tony_Blair", "RUMSFELD": "Donald_Rumsfeld"}


class Clock:
    def __init__(self):
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def crops(engine, paths) -> list[np.ndarray]:
    out = []
    for path in paths:
        analysis = engine.analyse(read_image(path))
        assert analysis.quality.ok and analysis.crop is not None, path
        out.append(analysis.crop)
    return out


@pytest.fixture
def storage(trained_engine, good_photos):
    storage = Storage.open()
    for employee_id, person in ENROLLED.items():
        enrol_files(trained_engine, storage.employees, employee_id, person.replace("_", " "), good_photos(person, 3))
    yield storage
    storage.close()


@pytest.fixture
def service(storage, trained_engine):
    return VerificationService(storage, trained_engine, FusionParams(frames=3, window_s=4.0), clock=Clock(),
                               liveness=LivenessPolicy(enabled=False))


def walk_up(service: VerificationService, faces):
    assert service.begin_walk_up() is None and service.walking_up and service.claimed_id == ""
    decision = None
    for face in faces:
        service.clock.now += 0.2
        decision = service.add_frame(face, service.clock.now)
    return decision


def test_an_enrolled_person_is_found_without_an_id_and_audited_as_a_walk_up(service, storage, trained_engine,
                                                                            good_photos):
    decision = walk_up(service, crops(trained_engine, good_photos("George_W_Bush", 3, skip=30)))
    assert decision.accepted and decision.claimed_id == "BUSH" and decision.name == "George W Bush"
    assert decision.reason == REASON_RECOGNISED and decision.mode == MODE_WALK_UP
    rule = service.walk_up_rule()
    assert decision.threshold == rule.threshold and decision.score >= rule.threshold
    entry = storage.audit.entries(kind=KIND_DECISION)[0]
    assert (entry.claimed_id, entry.verdict, entry.mode) == ("BUSH", "ACCEPT", MODE_WALK_UP)


def test_a_stranger_is_not_recognised_and_asked_for_the_id(service, storage, trained_engine, good_photos):
    decision = walk_up(service, crops(trained_engine, good_photos("Jacques_Chirac", 3)))
    assert not decision.accepted and decision.reason == REASON_NOT_RECOGNISED and decision.claimed_id == ""
    assert decision.message == "Not recognised, please enter your ID"
    entry = storage.audit.entries(kind=KIND_DECISION)[0]
    assert (entry.claimed_id, entry.verdict, entry.mode, entry.reason) == ("", "REJECT", MODE_WALK_UP,
                                                                           REASON_NOT_RECOGNISED)


def test_the_index_follows_enrolment_and_deletion(service, storage, trained_engine, good_photos):
    faces = crops(trained_engine, good_photos("Colin_Powell", 3, skip=30))
    assert walk_up(service, faces).claimed_id == "POWELL"
    generation = service.gallery().generation
    assert storage.employees.delete("POWELL")
    gone = walk_up(service, faces)  # the next walk-up syncs the index first
    assert not gone.accepted and service.gallery().generation > generation and "POWELL" not in service.gallery().people


def test_a_typed_id_replaces_a_walk_up_under_way(service, trained_engine, good_photos):
    faces = crops(trained_engine, good_photos("George_W_Bush", 3, skip=30))
    assert service.begin_walk_up() is None
    service.clock.now += 0.2
    assert service.add_frame(faces[0], service.clock.now) is None
    assert service.begin("BUSH") is None and not service.walking_up and service.claimed_id == "BUSH"
    decision = None
    for face in faces:
        service.clock.now += 0.2
        decision = service.add_frame(face, service.clock.now)
    assert decision.accepted and decision.mode == MODE_ID and decision.reason == REASON_MATCH


def test_no_face_in_time_and_nobody_enrolled(trained_engine, good_photos):
    storage = Storage.open()
    try:
        clock = Clock()
        service = VerificationService(storage, trained_engine, clock=clock, liveness=LivenessPolicy(enabled=False))
        nobody = service.begin_walk_up()
        assert nobody is not None and nobody.reason == REASON_NOBODY_ENROLLED and nobody.mode == MODE_WALK_UP
        enrol_files(trained_engine, storage.employees, "E1", "Someone", good_photos("Colin_Powell", 1))
        assert service.begin_walk_up() is None
        clock.now += 10
        late = service.add_frame(None, clock.now)
        assert late is not None and late.reason == REASON_NO_FACE and late.mode == MODE_WALK_UP
    finally:
        storage.close()


def test_walk_ups_are_refused_for_a_model_the_rule_was_not_calibrated_for(untrained_engine):
    storage = Storage.open()
    try:
        problems: list[str] = []
        service = VerificationService(storage, untrained_engine, report=problems.append,
                                      liveness=LivenessPolicy(enabled=False))
        decision = service.begin_walk_up()
        assert decision.reason == REASON_NO_WALK_UP and not decision.accepted
        assert problems and "another face model" in problems[0]
    finally:
        storage.close()
