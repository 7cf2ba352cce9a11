#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the kiosk and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to 2.13.0 (the CPU build) in pyproject.toml
.venv/bin/python -m pip install -q -e ".[lab,test]"
