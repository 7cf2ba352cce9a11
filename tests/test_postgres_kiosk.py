"""A fleet kiosk's window on a real PostgreSQL registry (#14; skipped, with the reason, where no server can
be started): the status bar says the registry is online, the admin tab has its Registry page, and an employee
enrolled at another kiosk appears in this kiosk's admin list and is accepted here, through the window.
LFW photos as the camera, so liveness is off (as in tests/test_app.py)."""

from __future__ import annotations

import shutil
import time

import pytest
from helpers import verify, wait_ready

from kiosk.app.enrolment import enrol_files
from kiosk.storage import Storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_an_employee_enrolled_at_another_kiosk_is_accepted_at_this_one(
        qtbot, make_window, postgres_cluster, registry_db, trained_weights, trained_engine, good_photos,
        lfw_photos, tmp_path):
    url = postgres_cluster.url("kiosk_a", registry_db)
    camera = tmp_path / "camera"
    camera.mkdir()
    for path in lfw_photos("George_W_Bush")[30:40]:
        shutil.copy(path, camera / path.name)
    window = make_window(trained_weights, camera, database=url)
    wait_ready(qtbot, window, timeout=30000)
    assert window.storage.is_fleet and window.connection_status.text().startswith("Registry online")
    panel = window.admin.panel
    assert "Registry" in [panel.tabText(i) for i in range(panel.count())]

    other = Storage.open(tmp_path / "kiosk-at-the-back-door", url=url)  # another entrance, same registry
    try:
        enrolled_at = time.monotonic()
        enrol_files(trained_engine, other.employees, "BUSH", "George W. Bush", good_photos("George_W_Bush", 2))
        qtbot.waitUntil(lambda: window.storage.employees.get("BUSH") is not None, timeout=5000)
        print(f"enrolled at the back door, known here {time.monotonic() - enrolled_at:.2f} s later")
        table = window.employees.table  # the admin's list was refreshed by the registry's change
        qtbot.waitUntil(lambda: any(table.item(r, 0).text() == "BUSH" for r in range(table.rowCount())),
                        timeout=5000)
        decision = verify(qtbot, window, "BUSH")
        assert decision.accepted and decision.name == "George W. Bush"
    finally:
        other.close()
