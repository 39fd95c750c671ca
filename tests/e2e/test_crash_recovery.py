"""A crash at any point is recoverable on restart: the node (a real `photo-gateway serve`
process) is killed with SIGKILL at each named crash point, started again, and every photo ends
in Orthanc exactly once (one instance per photo) with staging empty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, node_settings, wait_until
from gateway.faults import NAMES
from gateway.item import State
from gateway.journal import Journal
from gateway.network import Address
from gateway.orthanc import EmbeddedOrthanc, free_port
from photo_factory import make_jpeg

PHOTOS = 3


def _drop(inbox: Path, n: int) -> None:
    for i in range(n):
        meta = {"patient": {"id": f"CRASH{i:03d}", "issuer": "HOSP", "name": f"CRASH^TEST{i}"},
                "consent": {"status": "granted", "scope": ["clinical-care"]}}
        (inbox / f"photo{i}.jpg.json.part").write_text(json.dumps(meta))
        (inbox / f"photo{i}.jpg.part").write_bytes(make_jpeg(width=64, height=48, seed=100 + i))
        os.rename(inbox / f"photo{i}.jpg.json.part", inbox / f"photo{i}.jpg.json")
        os.rename(inbox / f"photo{i}.jpg.part", inbox / f"photo{i}.jpg")


def _serve(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("point", NAMES)
def test_killed_at_a_crash_point_then_restarted_every_photo_is_stored_once(tmp_path, cli_env, point):
    node_port = free_port()
    pacs = EmbeddedOrthanc(tmp_path / "orthanc",
                           modalities={"PHOTOGW": Address("PHOTOGW", "127.0.0.1", node_port)})
    pacs.start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = node_settings(
        tmp_path,
        {"pacs": {"address": str(pacs.address), "storage_commitment": True,
                  "retry": {"attempts": 50, "initial_s": 0.2, "max_s": 1}}},
        node={"ae_title": "PHOTOGW", "host": "127.0.0.1", "port": node_port},
        sources={"folder": {"path": str(inbox), "require_sidecar": True}},
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(cfg.model_dump_json())
    journal_file = tmp_path / "staging" / "journal.sqlite"
    first = second = None
    try:
        _drop(inbox, PHOTOS)
        first = _serve(config, {**cli_env, "PHOTO_GATEWAY_CRASH_AT": point})
        assert first.wait(timeout=60) == -9, first.stderr.read().decode()[-2000:] if first.stderr else ""
        second = _serve(config, cli_env)

        def all_done() -> bool:
            if pacs.instance_count() != PHOTOS or any(inbox.glob("*.jpg")):
                return False
            with Journal(journal_file) as journal:
                counts = journal.counts()
            return counts[State.PURGED] >= PHOTOS and sum(
                n for s, n in counts.items() if s not in (State.PURGED, State.REJECTED)) == 0
        wait_until(all_done, 90, interval=0.3, what=f"recovery after a crash {point}")
        assert pacs.instance_count() == PHOTOS  # one instance per photo: exactly once
        assert list((tmp_path / "staging" / "items").iterdir()) == []
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
        pacs.stop()
