"""Shared fixtures: a real Orthanc on free loopback ports, DCMTK peers by full path, dciodvfy.

Nothing here is mocked: the PACS is the Debian `orthanc` binary, the peers are DCMTK's tools
(called as /usr/bin/...: pynetdicom installs apps with the same names into the venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
sys.path.insert(0, str(TESTS))  # photo_factory

from gateway.orthanc import EmbeddedOrthanc  # noqa: E402
from gateway.settings import Settings, write_key_file  # noqa: E402

DCMTK = Path("/usr/bin")
# The one false positive of dciodvfy 1.00~20220618 the contract allowlists (PS3.3 C.7.2.3:
# Clinical Trial Protocol ID is Type 1C inside the consent item, absent unless NAMED_PROTOCOL).
DCIODVFY_ALLOWED = (
    "Only permitted when DistributionType is NAMED_PROTOCOL - attribute <ClinicalTrialProtocolID>",
)


def dcmtk(tool: str, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool by full path."""
    return subprocess.run([str(DCMTK / tool), *args], capture_output=True, text=True, timeout=timeout, check=check)


def dciodvfy_errors(path: Path | str) -> list[str]:
    """The error lines dciodvfy reports for an object, minus the allowlisted false positive."""
    run = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error") and not any(a in ln for a in DCIODVFY_ALLOWED)]


def assert_dciodvfy_clean(path: Path | str) -> None:
    errors = dciodvfy_errors(path)
    assert errors == [], f"dciodvfy errors in {path}:\n" + "\n".join(errors)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[EmbeddedOrthanc]:
    """A real Orthanc with its own storage in tmp_path, stopped by PID afterwards."""
    pacs = EmbeddedOrthanc(tmp_path / "orthanc")
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the CLI with its own local state directory (its own pseudonym secret)."""
    state = tmp_path / "state" / "photo-gateway"
    state.mkdir(parents=True, mode=0o700)
    write_key_file(state / "pseudonym.key")  # made here, so the first-use notice stays out of stderr
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "state"))
    env.pop("PHOTO_GATEWAY_CONFIG", None)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ...` in a subprocess, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def node_settings(tmp_path: Path, destinations: dict[str, dict], **sections: object) -> "Settings":
    """A node config in tmp_path: key files made with keygen's function, staging in tmp_path."""
    from gateway.settings import Settings

    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    if not (keys / "staging.key").exists():
        write_key_file(keys / "staging.key")
        write_key_file(keys / "pseudonym.key")
    raw: dict[str, object] = {
        "staging": {"directory": str(tmp_path / "staging"), "key_file": str(keys / "staging.key")},
        "deid": {"secret_file": str(keys / "pseudonym.key")},
        "destinations": destinations,
        "routes": [{"match": {}, "to": list(destinations)}],
    }
    raw.update(sections)
    return Settings.model_validate(raw)


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # noqa: ANN001
    """Poll with a deadline (no fixed sleeps standing in for the real world)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
