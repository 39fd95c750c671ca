"""The product code stays ruff-clean and mypy --strict clean (CONVENTIONS.md), checked in CI."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

PACKAGES = ["gateway", "dicom_mapping"]


def test_ruff_finds_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", *PACKAGES], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_strict_finds_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "mypy", *PACKAGES], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
