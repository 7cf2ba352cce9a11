"""`kiosk evaluate site` (kiosk/lab/site_eval.py) on real sites: the protocol's keys, and the issue's bars on NUAA's
9 East Asian people with one reference frame each; bad input gives exit 2 with the reason."""

from __future__ import annotations

import json

import pytest
from helpers import DATASETS

from kiosk.cli import EXIT_BAD_INPUT, main

pytestmark = pytest.mark.slow  # the shipped models on NUAA's frames

LIVE = DATASETS / "nuaa" / "live"
KEYS = {"genuine_accept", "insider_accept", "outsider_accept", "walkup_right", "walkup_wrong_person",
        "walkup_outsider_accept", "people", "attempts"}


@pytest.mark.skipif(not LIVE.is_dir(), reason=f"NUAA frames not found at {LIVE}")
def test_a_site_of_nuaa_people_keeps_colleagues_and_outsiders_out_and_lets_people_in(tmp_path, capsys):
    out = tmp_path / "site.json"
    assert main(["evaluate", "site", "--root", str(LIVE), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert KEYS <= set(result) and KEYS - {"people", "attempts"} <= set(result["today"])
    assert result["people"] == 9 and len(result["sites"]) == 5
    assert sorted(sum((s["outsiders"] for s in result["sites"]), [])) == sorted(p.name for p in LIVE.iterdir())
    assert result["insider_accept"] == 0
    assert result["outsider_accept"] <= 0.01
    assert result["genuine_accept"] >= 0.98
    assert result["today"]["insider_accept"] > 0.5  # one global threshold lets most colleagues in here
    printed = capsys.readouterr().out
    assert "today (one threshold)" in printed and "site rules" in printed and "insider_accept" in printed


def test_bad_site_arguments_are_refused_with_exit_2(tmp_path, capsys):
    assert main(["evaluate", "site", "--root", str(tmp_path / "missing")]) == EXIT_BAD_INPUT
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", "site", "--outsiders", "1.5"]) == EXIT_BAD_INPUT
    assert "--outsiders" in capsys.readouterr().err
    (tmp_path / "one").mkdir()
    assert main(["evaluate", "site", "--root", str(tmp_path / "one")]) == EXIT_BAD_INPUT
