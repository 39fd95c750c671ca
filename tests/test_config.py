"""Example configs are accepted by `config check`; bad ones are refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from gateway.settings import write_key_file

EXAMPLES = sorted((REPO / "config").glob("*.yaml"))


def _relocated(example: Path, tmp_path: Path) -> Path:
    """The example with its key files made (with keygen's function) where it says, or under
    tmp_path where it names a system path."""
    raw = yaml.safe_load(example.read_text())

    def local(p: str) -> str:
        return str(tmp_path / Path(p).name) if Path(p).is_absolute() else str(tmp_path / p)

    raw["staging"]["directory"] = local(raw["staging"]["directory"])
    for section, key in (("staging", "key_file"), ("deid", "secret_file")):
        raw[section][key] = local(raw[section][key])
        Path(raw[section][key]).parent.mkdir(parents=True, exist_ok=True)
        write_key_file(Path(raw[section][key]))
    target = tmp_path / example.name
    target.write_text(yaml.safe_dump(raw))
    return target


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"gateway.example.yaml", "local.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_passes_config_check(example, tmp_path, cli_env):
    result = run_cli("config", "check", "--config", str(_relocated(example, tmp_path)), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": ok")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["node"].update(colour="blue"), "node.colour: unknown key"),
        (lambda c: c["destinations"]["pacs"].update(address="PACS@host"), "AET@HOST:PORT"),
        (lambda c: c["routes"].append({"to": ["nowhere"]}), "'nowhere'"),
        (lambda c: c["deid"].update(options=["retain-everything"]), "retain-everything"),
        (lambda c: c["node"].update(port=70000), "node.port"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key(tmp_path, cli_env, change, named):
    path = _relocated(REPO / "config" / "gateway.example.yaml", tmp_path)
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    result = run_cli("config", "check", "--config", str(path), env=cli_env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert named in line and str(path) in line


def test_a_key_file_readable_by_others_is_refused(tmp_path, cli_env):
    path = _relocated(REPO / "config" / "local.yaml", tmp_path)
    key = Path(yaml.safe_load(path.read_text())["staging"]["key_file"])
    key.chmod(0o644)
    result = run_cli("config", "check", "--config", str(path), env=cli_env)
    assert result.returncode == 2 and "chmod 600" in result.stderr and str(key) in result.stderr


def test_relative_paths_are_relative_to_the_config_file(tmp_path, cli_env):
    path = _relocated(REPO / "config" / "local.yaml", tmp_path)
    from gateway.settings import load

    cfg = load(path)
    assert cfg.sources.folder.path == tmp_path / "local-state" / "inbox"


def test_config_check_connect_echoes_destinations(tmp_path, cli_env, orthanc):
    path = _relocated(REPO / "config" / "local.yaml", tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["destinations"]["orthanc"]["address"] = str(orthanc.address)
    raw["destinations"]["down"] = {"address": "DOWN@127.0.0.1:9"}
    path.write_text(json.dumps(raw))
    result = run_cli("config", "check", "--connect", "--config", str(path), env=cli_env)
    assert result.returncode == 1
    assert f"destination orthanc {orthanc.address}: C-ECHO success" in result.stdout
    assert "destination down" in result.stderr
