"""What the kiosk screen says and when a walk-up starts: the visitor-facing rules, Qt-free.

The Qt kiosk tab draws; the wording of a verdict (``verdict_text``) and the walk-up start and re-arm rule
(``WalkUpTrigger``, its clock the caller's) live here, one home each.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.rules.decision import MODE_WALK_UP, REASON_NO_WALK_UP, Decision
from kiosk.rules.identification import REASON_NOT_RECOGNISED

WALK_UP_REARM_S = 60.0  # after a walk-up verdict, the next walk-up needs the face to leave, or this long
WALK_UP_LEFT_S = 1.0    # no face for this long: the person has left (a detection missed for a frame or two is not)
ASK_RECEPTION = "Please ask at the reception."
# walk-up refusals that tell the person to type their ID: a kiosk that takes no IDs sends them to reception
_ENTER_YOUR_ID = (REASON_NOT_RECOGNISED, REASON_NO_WALK_UP)


def verdict_text(decision: Decision, takes_ids: bool) -> str:
    """The line under the big ACCEPT / REJECT: a welcome by name, else the decision's message for people
    (never the audit's reason or detail)."""
    if decision.accepted and decision.name:
        return f"Welcome, {decision.name}"
    if decision.mode == MODE_WALK_UP and not takes_ids and decision.reason in _ENTER_YOUR_ID:
        return f"{decision.message.split(',')[0]}. {ASK_RECEPTION}"
    return decision.message


@dataclass
class WalkUpTrigger:
    """A good face in front of an idle kiosk starts a walk-up. After a walk-up's verdict the next one waits
    until the face has left the picture (no face for ``left_s``) or ``rearm_s`` has passed, so a person is let
    in once per presence, not again and again while they stand there."""

    rearm_s: float = WALK_UP_REARM_S
    left_s: float = WALK_UP_LEFT_S
    armed: bool = True
    verdict_at: float = float("-inf")
    face_gone_at: float | None = None  # when the face last went out of the picture (None: a face is there)

    def frame(self, face: bool, good: bool, ready: bool, now: float) -> bool:
        """A frame was analysed (``face``: one was found; ``good``: it passed the quality checks; ``ready``:
        the kiosk is idle in a walk-up mode with no ID being typed): True when a walk-up starts now."""
        if not face:
            if self.face_gone_at is None:
                self.face_gone_at = now
            if now - self.face_gone_at >= self.left_s:
                self.armed = True  # nobody in front of the camera: the next face is a new walk-up
            return False
        self.face_gone_at = None
        if ready and good and (self.armed or now - self.verdict_at >= self.rearm_s):
            self.armed = False
            return True
        return False

    def decided(self, now: float) -> None:
        """A walk-up's (or a typed ID's) verdict is on screen."""
        self.armed, self.verdict_at = False, now
