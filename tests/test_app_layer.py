"""The application layer without Qt, torch or LFW: every admin use case through ``kiosk.app.Kiosk``, each
writing its own audit entry, on a real store in a throw-away folder (tests/fakes.py's engine)."""

from __future__ import annotations

import csv

import pytest
from fakes import FakeEngine, person_picture

from kiosk.app import AuditNotRecorded, Kiosk
from kiosk.errors import FaceNotUsableError, KioskError
from kiosk.rules.decision import MODE_BOTH, MODE_ID, REASON_UNKNOWN_ID, FusionParams, LivenessPolicy, ThresholdPolicy
from kiosk.storage import (
    EVENT_DELETE,
    EVENT_ENROL,
    EVENT_EXPORT,
    EVENT_LIVENESS,
    EVENT_LOCKOUT,
    EVENT_MODE,
    EVENT_MODEL,
    EVENT_PIN_CHANGED,
    EVENT_PIN_SET,
    EVENT_PIN_WRONG,
    EVENT_RE_ENROL,
    EVENT_START,
    EVENT_STOP,
    EVENT_THRESHOLD,
    EVENT_UNLOCK,
    StorageError,
)
from kiosk.storage.pin import PinError


@pytest.fixture
def kiosk(tmp_path):
    with Kiosk.open(tmp_path / "site") as opened:
        yield opened


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def events(kiosk: Kiosk) -> list[tuple[str, str, str]]:
    """The admin events, oldest first: (kind, detail, reason)."""
    return [(e.kind, e.detail, e.reason) for e in reversed(kiosk.audit.entries()) if e.is_event]


def test_enrol_re_enrol_and_delete_are_each_audited_by_the_application_layer(kiosk, engine):
    employee = kiosk.admin.enrol(engine, "E1", "Ann", [(person_picture(1), "a.png"), (person_picture(1), "b.png")])
    assert employee.photo_count == 2 and kiosk.employees.get("E1").name == "Ann"
    kiosk.admin.enrol(engine, "E1", "Ann", [(person_picture(1), "c.png")])
    assert kiosk.employees.get("E1").photo_count == 1
    assert kiosk.admin.delete("E1") and kiosk.employees.get("E1") is None
    assert not kiosk.admin.delete("E1")  # nobody left to delete: nothing audited
    assert events(kiosk) == [(EVENT_ENROL, "E1", "2 photo(s), by the admin"),
                             (EVENT_RE_ENROL, "E1", "1 photo(s), by the admin"),
                             (EVENT_DELETE, "E1", "deleted by the admin, confirmed")]


def test_an_enrolment_with_a_photo_without_a_face_stores_and_audits_nothing(kiosk, engine):
    black = person_picture(1) * 0
    with pytest.raises(FaceNotUsableError, match="dark.png"):
        kiosk.admin.enrol(engine, "E2", "Bo", [(person_picture(2), "ok.png"), (black, "dark.png")])
    assert kiosk.employees.get("E2") is None and events(kiosk) == []


def test_threshold_liveness_and_mode_changes_are_audited_old_to_new_and_saved(kiosk):
    kiosk.admin.set_threshold(ThresholdPolicy(0.7), ThresholdPolicy(None), model_default=0.624)
    kiosk.admin.set_threshold(ThresholdPolicy(0.7), ThresholdPolicy(0.7), model_default=0.624)  # no change
    kiosk.admin.set_liveness(LivenessPolicy(False), LivenessPolicy(True), model_default=0.5)
    kiosk.admin.set_mode(MODE_BOTH, MODE_ID)
    with pytest.raises(KioskError, match="unknown kiosk mode"):
        kiosk.admin.set_mode("door-open", MODE_BOTH)
    settings = kiosk.settings()
    assert (settings.threshold, settings.liveness, settings.kiosk_mode) == (0.7, False, MODE_BOTH)
    confirmed = "applied by the admin, confirmed"
    assert events(kiosk) == [(EVENT_THRESHOLD, "0.624 (model default) -> 0.700", confirmed),
                             (EVENT_LIVENESS, "on at 0.500 (model default) -> off", confirmed),
                             (EVENT_MODE, f"{MODE_ID} -> {MODE_BOTH}", "changed by the admin, confirmed")]


def test_the_export_writes_every_entry_and_is_itself_audited(kiosk, engine, tmp_path):
    kiosk.admin.enrol(engine, "E1", "Ann", [(person_picture(1), "a.png")])
    rows = kiosk.admin.export_audit(tmp_path / "audit.csv")
    with open(tmp_path / "audit.csv", newline="") as f:
        written = list(csv.reader(f))
    assert rows == len(written) - 1 >= 1 and "E1" in str(written)
    assert events(kiosk)[-1][0] == EVENT_EXPORT


@pytest.mark.slow  # 15 scrypt checks
def test_the_pin_use_cases_audit_first_pin_unlock_wrong_pins_the_lockout_a_change_and_a_reset(kiosk):
    pins = kiosk.pins
    pins.set_first("246810", "246810")
    with pytest.raises(PinError):
        pins.set_first("135790", "135790")  # a PIN is set: the first-start path is closed
    assert pins.unlock("246810").ok
    with pytest.raises(PinError, match="current PIN is not right"):
        pins.change("000000", "135790", "135790")
    pins.change("246810", "135790", "135790")
    assert pins.unlock("135790").ok
    for _ in range(5):
        assert not pins.unlock("000000").ok
    assert pins.locked_out and not pins.unlock("135790").ok  # locked: even the right PIN waits
    pins.reset("112233", "112233")
    assert not pins.locked_out and pins.unlock("112233").ok
    kinds = [kind for kind, _, _ in events(kiosk)]
    assert kinds == [EVENT_PIN_SET, EVENT_UNLOCK, EVENT_UNLOCK, EVENT_PIN_WRONG, EVENT_PIN_CHANGED, EVENT_UNLOCK]\
        + [EVENT_PIN_WRONG] * 5 + [EVENT_LOCKOUT, EVENT_PIN_SET, EVENT_UNLOCK]
    assert events(kiosk)[3][2].startswith("changing the PIN: the current PIN is not right")


def test_start_stop_and_model_change_are_audited(kiosk):
    kiosk.admin.started("source 0, weights face_siamese.pt", "windowed")
    kiosk.admin.model_changed("face_siamese.pt: 2 re-embedded")
    kiosk.admin.stopped("quit by the admin")
    assert [kind for kind, _, _ in events(kiosk)] == [EVENT_START, EVENT_MODEL, EVENT_STOP]


def test_a_change_whose_audit_entry_cannot_be_written_stands_and_says_so(kiosk, engine, monkeypatch):
    def broken(*_args, **_kwargs):
        raise StorageError("disk full")

    monkeypatch.setattr(kiosk.audit, "record_event", broken)
    with pytest.raises(AuditNotRecorded, match="disk full"):
        kiosk.admin.enrol(engine, "E1", "Ann", [(person_picture(1), "a.png")])
    assert kiosk.employees.get("E1") is not None  # enrolled: only the entry is missing, and the caller is told
    with pytest.raises(AuditNotRecorded):
        kiosk.admin.delete("E1")
    assert kiosk.employees.get("E1") is None


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_attempt_through_the_kiosk_accepts_the_person_refuses_a_colleague_and_audits_both(kiosk, engine):
    for seed, employee in ((1, "E1"), (2, "E2")):
        kiosk.admin.enrol(engine, employee, f"person {seed}", [(person_picture(seed), "ref.png")])
    clock = Clock()
    service = kiosk.verification(engine, FusionParams(frames=2), ThresholdPolicy(None), LivenessPolicy(False),
                                 clock=clock)
    verdicts = []
    for claimed, seed in (("E1", 1), ("E1", 2)):  # E1 themself, then E2 with E1's badge
        assert service.begin(claimed) is None
        decision = None
        for _ in range(2):
            clock.now += 0.1
            decision = service.add_analysis(engine.analyse(person_picture(seed)), clock.now) or decision
        verdicts.append((decision.verdict, decision.name))
    assert service.begin("E9").reason == REASON_UNKNOWN_ID
    assert verdicts == [("ACCEPT", "person 1"), ("REJECT", None)]
    decisions = [(e.claimed_id, e.verdict) for e in reversed(kiosk.audit.entries()) if not e.is_event]
    assert decisions == [("E1", "ACCEPT"), ("E1", "REJECT"), ("E9", "REJECT")]


@pytest.mark.slow  # a second process
def test_kiosk_admin_reset_pin_writes_its_audit_entry_and_refuses_while_the_kiosk_runs():
    import subprocess
    import sys

    def reset(pin: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kiosk.cli", "admin", "reset-pin"], input=f"{pin}\n{pin}\n",
                              capture_output=True, text=True, timeout=120)

    assert reset("246810").returncode == 0
    with Kiosk.open() as running:  # the kiosk holds the store: a reset could not be audited, so it waits
        assert [(e.kind, e.reason) for e in running.audit.entries() if e.is_event] == \
            [(EVENT_PIN_SET, "reset from the command line")]
        refused = reset("135790")
        assert refused.returncode == 2 and "Stop the kiosk first" in refused.stderr
        assert running.pins.unlock("246810").ok


def test_the_walk_up_trigger_waits_for_the_face_to_leave_or_the_re_arm_time():
    from kiosk.app.screen import WalkUpTrigger

    trigger = WalkUpTrigger(rearm_s=10.0)
    assert not trigger.frame(face=True, good=False, ready=True, now=0.0)  # a poor face starts nothing
    assert not trigger.frame(face=True, good=True, ready=False, now=0.1)  # nor one while an ID is typed
    assert trigger.frame(face=True, good=True, ready=True, now=0.2)
    trigger.decided(now=3.0)
    assert not trigger.frame(face=True, good=True, ready=True, now=5.0)  # the same person, still standing
    assert trigger.frame(face=True, good=True, ready=True, now=13.0)  # ... until the re-arm time has passed
    trigger.decided(now=14.0)
    assert not trigger.frame(face=False, good=False, ready=True, now=14.2)  # a face missed for one frame ...
    assert not trigger.frame(face=True, good=True, ready=True, now=14.3)  # ... is the same presence
    assert not trigger.frame(face=False, good=False, ready=True, now=14.5)  # they leave (no face for left_s)
    assert not trigger.frame(face=False, good=False, ready=True, now=15.6)
    assert trigger.frame(face=True, good=True, ready=True, now=16.0)  # the next face is a new walk-up
    assert WalkUpTrigger().rearm_s == 60.0  # the default: a person standing there is not let in every few seconds


def test_the_verdict_text_welcomes_by_name_and_sends_walk_ups_to_reception_where_no_id_can_be_typed():
    from dataclasses import replace

    from kiosk.app.screen import verdict_text
    from kiosk.rules.decision import MODE_WALK_UP, refused
    from kiosk.rules.identification import REASON_NOT_RECOGNISED

    walk_up = refused("", REASON_NOT_RECOGNISED, 0.9, MODE_WALK_UP)
    assert verdict_text(walk_up, takes_ids=True) == "Not recognised, please enter your ID"
    assert verdict_text(walk_up, takes_ids=False) == "Not recognised. Please ask at the reception."
    accepted = replace(refused("E1", REASON_UNKNOWN_ID, 0.9), accepted=True, name="Ann")
    assert verdict_text(accepted, takes_ids=True) == "Welcome, Ann"
    unknown = refused("E9", REASON_UNKNOWN_ID, 0.9)
    assert verdict_text(unknown, takes_ids=False) == unknown.message == "Unknown ID"
