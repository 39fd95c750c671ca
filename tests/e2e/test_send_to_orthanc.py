"""A clinical photo travels from a file to a real Orthanc (issue: foundation)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

from conftest import REPO, assert_dciodvfy_clean, dcmtk, run_cli
from dicom_mapping import jpeg

SAMPLES = REPO / "sample_data"
PHOTOS = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".jpg", ".png", ".heic"})


def _frame(ds: pydicom.Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def test_send_stores_every_sample_and_orthanc_has_the_same_pixels(orthanc, cli_env, tmp_path):
    out = tmp_path / "converted"
    converted = run_cli("convert", *map(str, PHOTOS), "--out", str(out), env=cli_env)
    assert converted.returncode == 0, converted.stderr
    local = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in out.glob("*.dcm"))}
    assert len(local) == len(PHOTOS)

    sent = run_cli("send", *map(str, PHOTOS), "--to", str(orthanc.address), env=cli_env)
    assert sent.returncode == 0, sent.stderr
    assert orthanc.instance_count() == len(PHOTOS)
    for uid, mine in local.items():
        orthanc_id = orthanc.find_instance(uid)
        assert orthanc_id, f"{uid} is not in Orthanc"
        stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc_id)))
        assert stored.file_meta.TransferSyntaxUID == mine.file_meta.TransferSyntaxUID
        assert _frame(stored) == _frame(mine)
        assert np.array_equal(stored.pixel_array, mine.pixel_array)
        assert stored.PatientID == mine.PatientID and len(stored.PatientID) == 16


def test_dcmtk_storescu_and_findscu_interoperate_with_our_objects(orthanc, cli_env, tmp_path):
    """Independent peers: DCMTK sends our files into Orthanc and finds them by pseudonym."""
    out = tmp_path / "converted"
    assert run_cli("convert", str(PHOTOS[0]), "--out", str(out), env=cli_env).returncode == 0
    (path,) = list(out.glob("*.dcm"))
    ds = pydicom.dcmread(path)
    store = dcmtk("storescu", "-xy", "-aec", orthanc.ae_title, "127.0.0.1", str(orthanc.dicom_port), str(path))
    assert store.returncode == 0, store.stderr
    find = dcmtk("findscu", "-S", "-aec", orthanc.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"PatientID={ds.PatientID}", "-k", "StudyInstanceUID",
                 "127.0.0.1", str(orthanc.dicom_port))
    assert find.returncode == 0, find.stderr
    assert ds.StudyInstanceUID in find.stderr + find.stdout


def test_echo_reaches_orthanc_and_dcmtk_echoscu_agrees(orthanc, cli_env):
    ours = run_cli("echo", str(orthanc.address), env=cli_env)
    assert ours.returncode == 0, ours.stderr
    theirs = dcmtk("echoscu", "-aec", orthanc.ae_title, "127.0.0.1", str(orthanc.dicom_port))
    assert theirs.returncode == 0


def test_every_sample_converts_to_objects_dciodvfy_accepts(cli_env, tmp_path):
    for iod in ("sc", "vl-photo"):
        out = tmp_path / iod
        result = run_cli("convert", *map(str, PHOTOS), "--iod", iod, "--out", str(out), env=cli_env)
        assert result.returncode == 0, result.stderr
        files = sorted(out.glob("*.dcm"))
        assert len(files) == len(PHOTOS)
        for f in files:
            assert_dciodvfy_clean(f)


def test_unreachable_pacs_exits_1_with_one_line_naming_the_address(cli_env, tmp_path):
    from gateway.orthanc import free_port

    address = f"NOBODY@127.0.0.1:{free_port()}"
    result = run_cli("send", str(PHOTOS[0]), "--to", address, "--timeout", "5", env=cli_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in result.stderr


def test_sidecar_is_found_next_to_a_copied_photo(cli_env, tmp_path):
    photo = tmp_path / "copy.jpg"
    shutil.copy(PHOTOS[0], photo)
    shutil.copy(Path(str(PHOTOS[0]) + ".json"), tmp_path / "copy.jpg.json")
    result = run_cli("convert", str(photo), "--out", str(tmp_path / "o"), env=cli_env)
    assert result.returncode == 0, result.stderr
    (out,) = list((tmp_path / "o").glob("*.dcm"))
    frame = _frame(pydicom.dcmread(out))
    assert jpeg.segments(frame)[0].marker == 0xD8


def test_send_to_a_destination_with_storage_commitment_waits_for_orthanc_to_commit(tmp_path, cli_env):
    """send --destination follows the destination's config: Orthanc commits on a new association
    to the gateway's DICOM port (it knows the gateway from DicomModalities)."""
    from conftest import node_settings
    from gateway.network import Address
    from gateway.orthanc import EmbeddedOrthanc, free_port

    node_port = free_port()
    pacs = EmbeddedOrthanc(tmp_path / "orthanc",
                           modalities={"PHOTOGW": Address("PHOTOGW", "127.0.0.1", node_port)})
    pacs.start()
    try:
        cfg = node_settings(tmp_path, {"pacs": {"address": str(pacs.address), "storage_commitment": True}},
                            node={"ae_title": "PHOTOGW", "host": "127.0.0.1", "port": node_port})
        config = tmp_path / "gateway.yaml"
        config.write_text(cfg.model_dump_json())
        result = run_cli("send", *map(str, PHOTOS[:2]), "--destination", "pacs", "--config", str(config),
                         "--timeout", "60", env=cli_env)
        assert result.returncode == 0, result.stderr
        assert pacs.instance_count() == 2
        assert len(result.stdout.strip().splitlines()) == 2
        assert not list((tmp_path / "staging").glob("send-*"))  # nothing stays staged
    finally:
        pacs.stop()


def test_send_that_times_out_leaves_nothing_staged(tmp_path, cli_env):
    from gateway.orthanc import free_port

    result = run_cli("send", str(PHOTOS[0]), "--to", f"DOWN@127.0.0.1:{free_port()}", "--timeout", "2",
                     env=cli_env)
    assert result.returncode == 1
    state = Path(cli_env["XDG_DATA_HOME"]) / "photo-gateway"
    assert [p.name for p in state.iterdir()] == ["pseudonym.key"]
