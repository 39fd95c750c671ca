"""An Orthanc started on loopback for the demo and the tests: own storage, free ports, stopped by PID.

This is not how a hospital runs its PACS; it is the real PACS software, started small so that the
demo and the tests store into the same thing a site would use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.network import Address


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    if not found:
        raise ConfigError("Orthanc is not installed (Debian package 'orthanc'): run scripts/install.sh")
    return found


class EmbeddedOrthanc:
    """Orthanc with its own directory; `start()` can be called again after `stop()` (same storage)."""

    def __init__(
        self,
        workdir: Path,
        ae_title: str = "ORTHANC",
        modalities: dict[str, Address] | None = None,
        plugins: list[str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self.modalities = dict(modalities or {})
        self.plugins = plugins or []
        self.extra_config = extra_config or {}
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Address:
        return Address(self.ae_title, "127.0.0.1", self.dicom_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _write_config(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "photo-gateway-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,  # lets DCMTK findscu query in the tests
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": self.plugins,
            "DicomModalities": {
                name: [a.ae_title, a.host, a.port] for name, a in self.modalities.items()
            },
            **self.extra_config,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30) -> None:
        config = self._write_config()
        env = dict(os.environ, TCP_NODELAY="1")
        log = open(self.workdir / "orthanc.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [orthanc_binary(), str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=self.workdir, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.workdir}/orthanc.log")
            try:
                self.get("/system")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedOrthanc:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # REST helpers -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def find_instance(self, sop_instance_uid: str) -> str | None:
        body = json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
        found = json.loads(self.request("POST", "/tools/find", body.encode()))
        return found[0] if found else None

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])
