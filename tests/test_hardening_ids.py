"""Issue #25, items 8 and 9: employee IDs and names, the CSV export, and the smaller things, each failure the
issue found as a test that failed before its fix:

- an ID differing from an enrolled one only by homoglyphs (an all-Cyrillic 'Е17', or 'EI7', beside 'E17')
  was stored as a second, distinct ID; a lookup of the photos, or a delete, by a full-width ID missed the
  person;
- the audit export's ``x;=1+1`` became a formula cell for a spreadsheet that splits on ';';
- a FIFO, /dev/zero, an oversized file, NUL bytes, a huge field or a header-only liveness CSV hung the
  ``kiosk evaluate liveness`` command or ended it with a traceback;
- a damaged photo was reported "not used for verification" while its features still verified;
- deleting ``kiosk.lock`` let a second writer in while the first still ran.

Run alone with ``pytest -m reliability``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kiosk import cli
from kiosk.paths import PROJECT_ROOT, data_dir
from kiosk.rules.identification import references_by_person
from kiosk.storage import NewPhoto, Storage, StorageError, StoreInUseError
from kiosk.storage.lock import LOCK_NAME, acquire_writer_lock

pytestmark = pytest.mark.reliability

MODEL = "model-a"


def _photo(seed: int) -> NewPhoto:
    rng = np.random.default_rng(seed)
    return NewPhoto(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), rng.standard_normal(16).astype(np.float32))


# -- item 8: one ID for one look --------------------------------------------------------------------------------
@pytest.mark.parametrize("look_alike", [
    "\u041517",        # Cyrillic capital Ie, then digits: one script, so the mixed-script rule let it through
    "\u039517",        # Greek capital Epsilon
    "EI7", "El7",      # a capital I or a small L for the digit one
    "\u0415\u0406\u0037",  # Cyrillic Ie and Byelorussian-Ukrainian I
])
def test_an_id_that_differs_from_an_enrolled_one_only_by_homoglyphs_is_refused(storage, look_alike):
    storage.employees.enrol("E17", "Ann", [_photo(1)], MODEL)
    with pytest.raises(StorageError, match="looks like E17, which is already enrolled"):
        storage.employees.enrol(look_alike, "Mallory", [_photo(2)], MODEL)
    assert [e.id for e in storage.employees.search()] == ["E17"]
    storage.employees.enrol("E17", "Ann B.", [_photo(3)], MODEL)  # re-enrolling the ID itself is no look-alike
    storage.employees.enrol("E18", "Bob", [_photo(4)], MODEL)     # an ID that reads differently is fine


def test_every_form_of_one_id_is_that_id_and_invisible_forms_are_refused(storage):
    storage.employees.enrol("Zo\u00e9", "Zoe", [_photo(1)], MODEL)                 # NFC
    storage.employees.enrol("Zoe\u0301", "Zoe", [_photo(2)], MODEL, replace=False)  # NFD: the same ID
    storage.employees.enrol("E17", "Ann", [_photo(3)], MODEL)
    for hidden in ("E\u200b17", "E17\u200d", "\u202eE17", "E\u206617", "E17\u00ad"):  # zero-width, bidi, soft hyphen
        with pytest.raises(StorageError, match="invisible or control"):
            storage.employees.enrol(hidden, "Mallory", [_photo(4)], MODEL)
    assert sorted(e.id for e in storage.employees.search()) == ["E17", "Zo\u00e9"]
    assert storage.employees.get("Zo\u00e9").photo_count == 2


def test_a_lookup_or_a_delete_by_any_form_of_an_id_finds_it(storage):
    storage.employees.enrol("E17", "Ann", [_photo(1)], MODEL)
    full_width = "\uff25\uff11\uff17"
    assert storage.employees.get(full_width).id == "E17"
    assert len(storage.employees.references(full_width)) == 1  # before: .strip() only, no photos found
    assert storage.employees.reference_features(full_width, MODEL).shape == (1, 16)
    assert storage.employees.delete(f" {full_width} ") and storage.employees.count() == 0


HOSTILE = ["=HYPERLINK(\"http://x\")", "\n=cmd|' /C calc'!A0", "x;=1+1", "x;=1+1;", "a,@SUM(1)", "+1", "-1",
           "\t=1", "\r=1", "x\n=1", "x\r\n@A1", "x\u2028=1", "x\x0b=1", "x; =1", "x;\"=1", "x\t+1", "x|=1",
           "x\";=1+1;\"", "' ,=1"]


def _formula_cells(text: str) -> list[str]:
    """The cells that would start a formula, for readers splitting on each separator a spreadsheet locale
    uses: quote-aware (as Excel reads a CSV: a quote only opens a field at its start) and naive."""
    found = []
    for delimiter in (",", ";", "\t", "|"):
        rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
        rows += [line.split(delimiter) for line in text.splitlines()]
        for row in rows:
            for cell in row:
                if cell.lstrip(" \"")[:1] in ("=", "+", "-", "@"):
                    found.append(f"{delimiter!r}: {cell!r}")
    return found


def test_the_csv_export_starts_no_formula_for_any_separator_a_spreadsheet_splits_on(storage, tmp_path):
    from kiosk.storage.audit import EVENT_THRESHOLD

    for hostile in HOSTILE:
        storage.audit.record(hostile, "REJECT", "unknown ID", detail=hostile)
    storage.audit.record_event(EVENT_THRESHOLD, "x;=0.7", "a;@formula")
    out = tmp_path / "audit.csv"
    assert storage.audit.export_csv(out) == len(HOSTILE) + 1
    text = out.read_text()
    assert _formula_cells(text) == []  # before: 'x;=1+1' was written bare, and ';' split it into =1+1
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == len(HOSTILE) + 1  # no line break of a text started a row
    assert text.splitlines()[1].startswith('"')  # every cell quoted (OWASP)
    claimed = [r["claimed_id"] for r in rows[1:]][::-1]
    assert claimed[HOSTILE.index("x;=1+1")] == "x;'=1+1" and claimed[HOSTILE.index("=HYPERLINK(\"http://x\")")] \
        == "'=HYPERLINK(\"http://x\")"
    assert rows[0]["detail"] == "x;'=0.7" and rows[0]["reason"] == "a;'@formula"


# -- item 9: a damaged photo is not used --------------------------------------------------------------------------
def test_a_damaged_photo_is_not_used_for_verification_as_the_store_check_says():
    storage = Storage.open()
    try:
        storage.employees.enrol("E0", "Ann", [_photo(0), _photo(1)], MODEL)
        storage.employees.enrol("E1", "Bob", [_photo(2)], MODEL)
        first, second = storage.employees.references("E0")
        [only] = storage.employees.references("E1")
    finally:
        storage.close()
    for path in (first.path, only.path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    storage = Storage.open()
    try:
        assert {d.reference_id for d in storage.health.damage if d.photo} == {first.id, only.id}
        assert "damaged and not used for verification" in storage.health.summary
        features = storage.employees.reference_features("E0", MODEL)  # before: both photos' features
        np.testing.assert_array_equal(features, second.features[None])
        assert storage.employees.reference_features("E1", MODEL).size == 0  # before: ACCEPT on them
        assert set(references_by_person(storage.employees, MODEL)) == {"E0"}  # walk-ups alike
    finally:
        storage.close()
    only.path.unlink()  # a missing photo file: not used either
    storage = Storage.open(readonly=True)
    try:
        assert storage.employees.reference_features("E1", MODEL).size == 0
    finally:
        storage.close()


# -- item 9: the writer lock survives a deleted lock file ---------------------------------------------------------
HOLDER = """
    import sys
    import numpy as np
    from kiosk.storage import NewPhoto, Storage
    storage = Storage.open()
    print("ready", flush=True)
    sys.stdin.read()  # hold the store (and its writer lock) until the parent closes stdin
    storage.employees.enrol("E9", "Late", [NewPhoto(np.zeros((40, 30, 3), np.uint8), np.ones(16, np.float32))],
                            "model-a")
    storage.close()
    print("done", flush=True)
"""


@pytest.mark.slow
def test_deleting_the_lock_file_lets_no_second_writer_in_while_the_first_runs():
    Storage.open().close()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER)], cwd=PROJECT_ROOT, env=os.environ.copy(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        (data_dir() / LOCK_NAME).unlink()  # as a clean-up script or an admin might
        with pytest.raises(StoreInUseError, match="is in use by another process"):  # before: opened
            Storage.open()
        assert not (data_dir() / LOCK_NAME).exists()  # the refused writer left nothing behind
        with pytest.raises(StoreInUseError):  # nor does the lock itself, as a backup or a restore takes it
            acquire_writer_lock(data_dir())
    finally:
        out, err = child.communicate("", timeout=60)  # stdin closed: the child enrols, closes and ends
    assert child.returncode == 0 and out.strip() == "done", err
    storage = Storage.open()  # the first writer has ended: the lock is free, and its enrolment is there
    try:
        assert storage.employees.get("E9") is not None
    finally:
        storage.close()


# -- item 9: liveness label files -----------------------------------------------------------------------------------
def _evaluate_liveness(csv_path, capsys) -> tuple[int, str]:
    code = cli.main(["evaluate", "liveness", "--csv", str(csv_path)])
    return code, capsys.readouterr().err


def test_a_fifo_a_device_or_an_oversized_file_as_the_liveness_csv_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)  # nobody writes to it: reading it waited for ever
    for path, says in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file")):
        code, err = _evaluate_liveness(path, capsys)
        assert code == cli.EXIT_BAD_INPUT and says in err and "Traceback" not in err
    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:  # sparse: 64 MB + 1 byte without writing them
        handle.write(b"path,label\n")
        handle.truncate(64 * 1024 * 1024 + 1)
    code, err = _evaluate_liveness(big, capsys)
    assert code == cli.EXIT_BAD_INPUT and "larger than 64 MB" in err


@pytest.mark.parametrize("content, says", [
    (b"path,label\n", "no frames after the header"),
    (b"path,label\r\n\r\n", "no frames after the header"),
    (b"path,label\nlive/1.jpg,1\nlive/\x002.jpg,1\n", "line 3: NUL byte"),
    (b"path,label\n" + b"a" * 200_000 + b",1\n", "line 2: malformed CSV (field larger than field limit"),
    (b"path,label\n\"live/1.jpg,1\n", "line 2: expected path,label"),  # a quote left open: one field
    (b"path,label\nlive/\xff.jpg,1\n", "line 2: not UTF-8"),
    (b"", "the file is empty"),
    (b"file,live\nx.jpg,1\n", "line 1: needs a header 'path,label'"),
])
def test_a_malformed_liveness_csv_is_a_clear_error_with_exit_2(tmp_path, capsys, content, says):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    code, err = _evaluate_liveness(path, capsys)
    assert code == cli.EXIT_BAD_INPUT and says in err and "Traceback" not in err, err


def test_a_liveness_csv_with_a_bom_and_blank_lines_is_read(tmp_path):
    from kiosk.lab.training.liveness import read_labels

    folder = tmp_path
    (folder / "labels.csv").write_bytes(b"\xef\xbb\xbfpath,label,attempt\r\n\r\nlive/1.jpg,1,A\r\nspoof/2.jpg,0,\r\n")
    rows = read_labels(folder / "labels.csv")
    assert [(r[0].name, r[1], r[2], r[3]) for r in rows] == [("1.jpg", True, "live", "A"), ("2.jpg", False, "spoof", "")]
