"""The public Python API (kiosk.api, issue #23): the README's example runs as written on real LFW photos, bad
input raises clear KioskErrors before any attempt (nothing audited), liveness refuses photos of photos unless
switched off, there is one verdict type (Decision), and importing kiosk changes nothing in the process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import DATASETS

import kiosk.api as ka
from kiosk.app import KIND_DECISION, Kiosk
from kiosk.errors import FaceNotUsableError, ImageReadError, KioskError
from kiosk.rules.decision import MODE_ID, MODE_WALK_UP, REASON_ATTACK, REASON_MATCH, REASON_NO_FACE, Decision

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE_MARKER = "<!-- python-api-example"
NUAA = DATASETS / "nuaa"


def readme_example() -> str:
    """The Python block right after the marker in README.md."""
    found = re.search(re.escape(EXAMPLE_MARKER) + r".*?-->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"no ```python block after {EXAMPLE_MARKER!r} in {README}"
    return found.group(1)


def test_the_readme_example_is_at_most_ten_lines_and_uses_the_api():
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 10 and lines[0] == "import kiosk.api as ka"


@pytest.mark.slow
def test_the_readme_example_runs_on_lfw_photos_of_two_people(good_photos, tmp_path, monkeypatch, capsys):
    ann, bob = good_photos("Colin_Powell", 3), good_photos("Tony_Blair", 1)  # skipped, with the reason, without LFW
    for name, photo in (("ann1.jpg", ann[0]), ("ann2.jpg", ann[1]), ("door.jpg", ann[2]), ("bob1.jpg", bob[0])):
        shutil.copy(photo, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), str(README), "exec"), scope)  # noqa: S102 (our own README's example)

    decision, found = scope["decision"], scope["found"]
    assert isinstance(decision, Decision) and isinstance(found, Decision)
    assert decision.accepted and decision.reason == REASON_MATCH and decision.name == "Ann"
    assert decision.mode == MODE_ID and decision.liveness_threshold is None  # liveness=False: the face only
    assert found.accepted and (found.claimed_id, found.name, found.mode) == ("E1", "Ann", MODE_WALK_UP)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("ACCEPT face matches") and printed[1] == "ACCEPT E1 Ann"
    with Kiosk.open(tmp_path / "site-folder") as kiosk:  # written to the folder's store, audited as at the door
        assert {e.id for e in kiosk.employees.search("")} == {"E1", "E2"}
        decisions = kiosk.audit.entries(kind=KIND_DECISION)
        assert [(e.verdict, e.claimed_id, e.mode) for e in decisions] == [("ACCEPT", "E1", MODE_WALK_UP),
                                                                          ("ACCEPT", "E1", MODE_ID)]
        assert kiosk.audit.count() >= 4 and kiosk.audit.verify_chain() is None  # the two enrolments too


@pytest.fixture
def site(trained_engine, tmp_path):
    with ka.open_kiosk(tmp_path / "site", engine=trained_engine, liveness=False) as opened:
        yield opened


@pytest.mark.slow
def test_bad_input_raises_a_clear_kiosk_error_and_audits_nothing(site, good_photos, tmp_path):
    ann = good_photos("Colin_Powell", 2)
    site.enrol("E1", "Ann", [ann[0]])
    before = site.kiosk.audit.count()

    missing = tmp_path / "nobody.jpg"
    for call in (lambda: site.verify("E1", [ann[1], missing]), lambda: site.identify(missing),
                 lambda: site.enrol("E2", "Bob", [missing])):
        with pytest.raises(ImageReadError, match="nobody.jpg: no such file"):
            call()

    blank = np.full((240, 320, 3), 128, np.uint8)  # a picture without a face
    with pytest.raises(FaceNotUsableError, match="photo 2: no face") as info:
        site.verify("E1", [cv2.imread(str(ann[1])), blank])
    assert info.value.reasons == ["no face"]
    with pytest.raises(FaceNotUsableError, match="not enrolled: photo 1: no face"):
        site.enrol("E2", "Bob", blank)
    assert site.employee("E2") is None  # nothing stored

    with pytest.raises(ka.UnknownEmployeeError, match="'E9': nobody is enrolled under this ID"):
        site.verify(" E9 ", [ann[1]])
    for bad, message in ((np.zeros((240, 320), np.uint8), r"not a BGR image .*\(240, 320\)"),
                         (np.zeros((240, 320, 3), np.float32), "not a BGR image"),
                         (np.zeros((8, 8, 3), np.uint8), "too small to hold a face"),
                         (42, "not an image")):
        with pytest.raises(ImageReadError, match=message):
            site.identify([bad])
    with pytest.raises(KioskError, match="no photos given"):
        site.verify("E1", [])
    assert issubclass(ka.UnknownEmployeeError, KioskError)
    assert site.kiosk.audit.count() == before  # no attempt began

    unusable = site.verify("E1", [blank], skip_unusable=True)  # as the camera: the frame does not count
    assert not unusable.accepted and unusable.reason == REASON_NO_FACE
    assert [e.reason for e in site.kiosk.audit.entries(kind=KIND_DECISION)] == [REASON_NO_FACE]


@pytest.mark.slow
def test_frames_as_arrays_are_fused_as_the_kiosks_and_delete_is_audited(site, good_photos):
    ann, bob = good_photos("Colin_Powell", 5), good_photos("Tony_Blair", 1)
    site.enrol("E1", "Ann", ann[:1])
    site.enrol("E2", "Bob", bob)
    frames = np.stack([cv2.imread(str(p)) for p in ann[1:5]])  # (4, 250, 250, 3): four camera frames
    decision = site.verify("E1", frames)
    frames_setting = site.kiosk.settings().fusion.frames
    assert decision.accepted and len(decision.frame_scores) == min(4, frames_setting)
    impostor = site.verify("E2", ann[1])  # Ann with Bob's ID
    assert not impostor.accepted and impostor.claimed_id == "E2" and impostor.name is None
    assert site.delete("E2") and not site.delete("E2")  # the second: nobody to delete, nothing audited
    deleted = site.kiosk.audit.entries(kind="delete")
    assert [e.detail for e in deleted] == ["E2"] and site.employee("E2") is None


@pytest.mark.slow
@pytest.mark.skipif(not (NUAA / "live").is_dir(), reason=f"NUAA frames not found at {NUAA}")
def test_liveness_as_configured_refuses_a_photo_of_the_enrolled_person_and_can_be_switched_off(trained_engine,
                                                                                                tmp_path):
    def frames(kind: str) -> list[Path]:
        files = sorted(f for f in (NUAA / kind / "0001").glob("*.jpg") if f.stem.split("_")[3] == "02")
        return files[::max(1, len(files) // 6)][:6]

    reference = NUAA / "live" / "0001" / "0001_00_00_01_0.jpg"
    with ka.open_kiosk(tmp_path / "site", engine=trained_engine) as site:  # the kiosk's setting: liveness on
        site.enrol("P1", "NUAA person 1", reference)
        attack = site.verify("P1", frames("photo"), skip_unusable=True)
        assert not attack.accepted and attack.reason == REASON_ATTACK and attack.score >= attack.threshold
        live = site.verify("P1", frames("live"), skip_unusable=True)
        assert live.accepted and live.liveness >= live.liveness_threshold
    with ka.open_kiosk(tmp_path / "site", engine=trained_engine, liveness=False) as site:
        unchecked = site.verify("P1", frames("photo"), skip_unusable=True)
        assert unchecked.accepted and unchecked.liveness is None and unchecked.liveness_threshold is None


def test_the_engine_gives_no_verdict_of_its_own():
    """One verdict type: ACCEPT/REJECT is a Decision (the kiosk's rules); the engine only measures."""
    import kiosk.vision.engine as engine

    assert not hasattr(engine, "Verdict") and not hasattr(engine.FaceEngine, "verdict")


# -- importing kiosk --------------------------------------------------------------------------------------------
SETTINGS = {"cv2": "OPENCV_IO_MAX_IMAGE_PIXELS", "torch": "GOMP_SPINCOUNT"}


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in (*SETTINGS.values(), "KIOSK_MAX_IMAGE_PIXELS")}


def test_import_kiosk_leaves_the_environment_unchanged():
    code = textwrap.dedent("""
        import json, os, sys
        before = dict(os.environ)
        import kiosk
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("cv2", "torch", "numpy"))
        print(json.dumps({"changed": dict(os.environ) != before, "loaded": loaded}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=_clean_env())
    assert json.loads(done.stdout) == {"changed": False, "loaded": []}, done.stderr


# Imports each module given in a fresh set of kiosk modules; the first request for the watched library (cv2 or torch)
# stops the import and says what its setting was then. Watching cv2, torch is not loaded (it would take seconds).
_FIRST_LOAD = textwrap.dedent("""
    import importlib, json, os, sys
    SETTINGS, watch, modules = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]

    class Stop(BaseException):
        pass

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name == watch:
                raise Stop(os.environ.get(SETTINGS[name]))
            if name == "torch":
                raise Stop("not loaded")

    sys.meta_path.insert(0, Watch())
    start, seen = dict(os.environ), {}
    for module in modules:
        for name in [m for m in sys.modules if m.split(".")[0] == "kiosk"]:
            del sys.modules[name]
        os.environ.clear()
        os.environ.update(start)
        try:
            importlib.import_module(module)
        except Stop as stop:
            if stop.args[0] != "not loaded":
                seen[module] = stop.args[0]
    print(json.dumps(seen))
""")


# Entry points that load the library through others.
_ENTRY_POINTS = {"cv2": ["kiosk.app", "kiosk.api", "kiosk.qt.app"], "torch": ["kiosk.qt.app"]}


def _modules_loading(library: str) -> list[str]:
    """The kiosk modules that import ``library`` at module level, and the entry points."""
    import ast

    found = list(_ENTRY_POINTS[library])
    for path in sorted((ROOT / "kiosk").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            if any(name.split(".")[0] == library for name in names):
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
                break
    return found


@pytest.mark.slow
@pytest.mark.parametrize("library, expected", [("cv2", "40000000"), ("torch", "30000")])
def test_opencv_and_torch_settings_are_set_before_kiosk_code_loads_them(library, expected):
    """What `import kiosk` no longer does, the packages that load the libraries do: whichever kiosk module is
    imported first, OpenCV's pixel limit is set before cv2 loads, and the OpenMP spin count before torch."""
    modules = _modules_loading(library)
    assert len(modules) > 3
    done = subprocess.run([sys.executable, "-c", _FIRST_LOAD, json.dumps(SETTINGS), library, *modules],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=_clean_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {module: expected for module in modules}
