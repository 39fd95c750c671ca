"""Worklist lookup against a real Orthanc with its Modality Worklists plugin (Orthanc 1.10 sample
plugin: `Worklists.Enable` and `Worklists.Database`, a folder of `.wl` files made with dump2dcm)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dcmtk
from photo_factory import make_jpeg

from gateway import worklist
from gateway.clock import FakeClock
from gateway.errors import InputError, TransientError
from gateway.intake import Intake, Job
from gateway.journal import Journal
from gateway.orthanc import EmbeddedOrthanc
from gateway.settings import Settings
from gateway.staging import Staging

PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"
STUDY_UID = "1.2.826.0.1.3680043.8.498.424242"


def test_orthanc_worklist_plugin_is_installed() -> None:
    assert os.path.exists(PLUGIN), "scripts/install.sh installs orthanc, which ships the plugin"


def write_worklist(wl_dir: Path, file_stem: str, *, accession: str, patient_id: str,
                   issuer: str = "SYNTH-MRN", name: str = "TEST^WORKLIST", birth: str = "19700131",
                   sex: str = "F", study_uid: str = STUDY_UID) -> Path:
    """One `.wl` file from a DCMTK dump (what a RIS bridge or `wlmscpfs` setup would write)."""
    dump = f"""\
(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{accession}]
(0010,0010) PN [{name}]
(0010,0020) LO [{patient_id}]
(0010,0021) LO [{issuer}]
(0010,0030) DA [{birth}]
(0010,0040) CS [{sex}]
(0020,000d) UI [{study_uid}]
(0032,1060) LO [SYNTHETIC wound photo]
(0040,0100) SQ (Sequence with explicit length #=1)
  (fffe,e000) na (Item with explicit length #=4)
    (0008,0060) CS [XC]
    (0040,0001) AE [PHOTOGW]
    (0040,0002) DA [20261120]
    (0040,0009) SH [SPS-{accession}]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
"""
    source = wl_dir.parent / f"{file_stem}.dump"
    source.write_bytes(dump.encode("latin-1"))  # ISO_IR 100 is Latin-1
    target = wl_dir / f"{file_stem}.wl"
    run = dcmtk("dump2dcm", "+te", str(source), str(target))
    assert run.returncode == 0, run.stderr
    return target


def worklist_orthanc(workdir: Path, wl_dir: Path) -> EmbeddedOrthanc:
    wl_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedOrthanc(
        workdir, plugins=[PLUGIN],
        extra_config={"Worklists": {"Enable": True, "Database": str(wl_dir)},
                      # Orthanc 1.10 answers worklist C-FIND only from declared modalities unless
                      # this is set (the gateway is not declared in these tests).
                      "DicomAlwaysAllowFindWorklist": True})


@pytest.fixture(scope="module")
def mwl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedOrthanc]:
    base = tmp_path_factory.mktemp("mwl")
    wl_dir = base / "worklists"
    pacs = worklist_orthanc(base / "orthanc", wl_dir)
    write_worklist(wl_dir, "one", accession="ACC-0001", patient_id="WL0001",
                   name="MÜLLER^ANNA ", birth="19700131", sex="F")
    write_worklist(wl_dir, "shared-a", accession="ACC-SHARED", patient_id="WL0002",
                   study_uid=STUDY_UID + ".2")
    write_worklist(wl_dir, "shared-b", accession="ACC-SHARED", patient_id="WL0003",
                   study_uid=STUDY_UID + ".3")
    write_worklist(wl_dir, "steps-a", accession="ACC-STEPS", patient_id="WL0004", sex="X",
                   birth="", study_uid=STUDY_UID + ".4")
    write_worklist(wl_dir, "steps-b", accession="ACC-STEPS", patient_id="WL0004", sex="X",
                   birth="", study_uid=STUDY_UID + ".4")
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


def test_lookup_by_accession_returns_the_patient_and_study(mwl: EmbeddedOrthanc) -> None:
    entry = worklist.lookup(mwl.address, "ACC-0001")
    assert entry == {"id": "WL0001", "issuer": "SYNTH-MRN", "name": "MÜLLER^ANNA",
                     "birth_date": "1970-01-31", "sex": "F", "study_instance_uid": STUDY_UID}


def test_lookup_with_patient_id_must_match_it_too(mwl: EmbeddedOrthanc) -> None:
    assert worklist.lookup(mwl.address, "ACC-0001", "WL0001")["id"] == "WL0001"
    with pytest.raises(InputError, match="no worklist entry for the accession number"):
        worklist.lookup(mwl.address, "ACC-0001", "WL9999")


def test_unknown_accession_is_an_input_error(mwl: EmbeddedOrthanc) -> None:
    with pytest.raises(InputError, match="no worklist entry for the accession number"):
        worklist.lookup(mwl.address, "ACC-9999")


def test_accession_of_two_patients_is_an_input_error(mwl: EmbeddedOrthanc) -> None:
    with pytest.raises(InputError, match="the accession number matches several patients"):
        worklist.lookup(mwl.address, "ACC-SHARED")


def test_several_steps_of_one_patient_are_one_answer(mwl: EmbeddedOrthanc) -> None:
    entry = worklist.lookup(mwl.address, "ACC-STEPS")
    assert entry["id"] == "WL0004" and entry["study_instance_uid"] == STUDY_UID + ".4"
    assert entry["birth_date"] is None and entry["sex"] is None  # empty DA, sex outside F/M/O


def test_wildcards_are_refused_before_asking(mwl: EmbeddedOrthanc) -> None:
    # "ACC-000*" would match ACC-0001 by C-FIND wildcard rules: never attach a photo that way.
    with pytest.raises(InputError, match="wildcard"):
        worklist.lookup(mwl.address, "ACC-000*")


def test_unreachable_worklist_is_transient_naming_the_address(tmp_path: Path) -> None:
    pacs = worklist_orthanc(tmp_path / "orthanc", tmp_path / "worklists")
    write_worklist(tmp_path / "worklists", "one", accession="ACC-0001", patient_id="WL0001")
    pacs.start()
    try:
        assert worklist.lookup(pacs.address, "ACC-0001")["id"] == "WL0001"
    finally:
        pacs.stop()
    with pytest.raises(TransientError) as caught:
        worklist.lookup(pacs.address, "ACC-0001", timeout=5)
    assert str(pacs.address) in str(caught.value)


def _intake(tmp_path: Path, lookup: worklist.WorklistFn) -> tuple[Intake, Staging]:
    settings = Settings.model_validate({
        "destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
        "routes": [{"match": {}, "to": ["pacs"]}],
        "worklist": {"address": "MWL@127.0.0.1:4242"},
    })
    clock = FakeClock()
    staging = Staging(tmp_path / "staging", [os.urandom(32)])
    return Intake(settings, Journal(tmp_path / "journal.sqlite", clock), staging, clock,
                  worklist=lookup), staging


ACCESSION_ONLY = {"accession_number": "ACC-0001", "body_site": "chest",
                  "consent": {"status": "granted", "scope": ["clinical-care"]}}


def test_intake_takes_the_patient_and_study_from_the_worklist(mwl: EmbeddedOrthanc,
                                                              tmp_path: Path) -> None:
    intake, staging = _intake(tmp_path, worklist.make_lookup(mwl.address, "PHOTOGW", 10))
    (item,) = intake.accept_photo(make_jpeg(width=64, height=48), json.dumps(ACCESSION_ONLY),
                                  source="folder")
    job = json.loads(staging.read(item.id, "job"))
    assert job["meta"]["patient"]["id"] == "WL0001"
    assert job["meta"]["patient"]["issuer"] == "SYNTH-MRN"
    assert job["study_uid_source"] == STUDY_UID
    assert Job.decode(staging.read(item.id, "job")).study_uid_source == STUDY_UID


def test_intake_refuses_an_accession_the_worklist_does_not_know(mwl: EmbeddedOrthanc,
                                                                tmp_path: Path) -> None:
    intake, staging = _intake(tmp_path, worklist.make_lookup(mwl.address, "PHOTOGW", 10))
    meta = dict(ACCESSION_ONLY, accession_number="ACC-9999")
    with pytest.raises(InputError, match="no worklist entry"):
        intake.accept_photo(make_jpeg(width=64, height=48), json.dumps(meta), source="folder")
    assert staging.item_ids() == []


def test_convert_on_the_command_line_fills_the_patient_from_the_worklist(mwl: EmbeddedOrthanc,
                                                                         tmp_path: Path,
                                                                         cli_env: dict[str, str]) -> None:
    """`convert --config` with an accession-only sidecar makes what the node would send."""
    import json

    import pydicom

    from conftest import node_settings, run_cli
    from dicom_mapping.uids import map_uid, patient_pseudonym
    from gateway.settings import read_keys
    from photo_factory import make_jpeg

    cfg = node_settings(tmp_path, {"pacs": {"address": "PACS@127.0.0.1:11112"}},
                        worklist={"address": str(mwl.address)})
    config = tmp_path / "gateway.yaml"
    config.write_text(cfg.model_dump_json())
    photo = tmp_path / "wound.jpg"
    photo.write_bytes(make_jpeg(width=64, height=48))
    (tmp_path / "wound.jpg.json").write_text(json.dumps(ACCESSION_ONLY))
    result = run_cli("convert", str(photo), "--out", str(tmp_path / "out"), "--config", str(config), env=cli_env)
    assert result.returncode == 0, result.stderr
    (dcm,) = list((tmp_path / "out").glob("*.dcm"))
    ds = pydicom.dcmread(dcm)
    secret = read_keys(cfg.deid.secret_file)[0]
    assert ds.PatientID == patient_pseudonym(secret, "SYNTH-MRN", "WL0001")
    assert ds.StudyInstanceUID == map_uid(secret, STUDY_UID)
