"""Acceptance: every front door of a running node, end to end into a real Orthanc.

The node runs in-process (`Node(cfg).start()`) with its real doors: DCMTK's `storescu` calls the
DICOM port, files are dropped into the hot folder as a camera's software does (`.part`, then
rename), httpx posts to the HTTP door, and an Orthanc with its worklist plugin answers the MWL
C-FIND. What arrives is read back from Orthanc's REST API, byte for byte: no marker, no input
patient value and no input instance UID may be anywhere in the stored file, and the node's log
records (captured at INFO for the whole run) may not carry them either.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from conftest import dciodvfy_errors, dcmtk, node_settings, run_cli, wait_until
from dicom_factory import BIRTH_DATE, DICOM_MARKERS, careless_markers, careless_photo
from photo_factory import (
    JPEG_MARKER_FIELDS,
    MARKERS,
    UPRIGHT_QUADRANTS,
    asymmetric_pattern,
    make_jpeg,
    markers_present,
    quadrant_colours,
)
from PIL import Image
from pydicom.dataset import Dataset

from dicom_mapping import jpeg
from dicom_mapping.uids import map_uid, patient_pseudonym
from gateway.item import State
from gateway.node import Node
from gateway.orthanc import EmbeddedOrthanc, free_port
from gateway.settings import Settings, read_keys

pytestmark = pytest.mark.e2e

DICOM_DIR = Path(__file__).resolve().parents[1] / "data" / "dicom"
WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"
GRANTED = {"status": "granted", "scope": ["clinical-care"]}
RETRY = {"attempts": 50, "initial_s": 0.2, "max_s": 1}
TIMEOUT_S = 20  # every wait for the real world here
CALLING_AE = "CAMERA1"

PHOTO_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
}
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
# storescu proposes only uncompressed syntaxes unless told (as in tests/gateway/test_dimse_door.py)
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.51": ["-xx"],
    "1.2.840.10008.1.2.4.70": ["-xs"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


def _header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


DOOR_PHOTOS = [p for p in sorted(DICOM_DIR.glob("*.dcm"))
               if str(_header(p).SOPClassUID) in PHOTO_CLASSES
               and str(_header(p).get("PatientID", "") or "").strip()]
CT_FILE = DICOM_DIR / "ct_small_non_photo_patient_tags.dcm"


# -- the careless DICOM photo (tests/dicom_factory.py) ---------------------------------------------

CARELESS_MARKERS, CARELESS_BIRTH_DATE = DICOM_MARKERS, BIRTH_DATE


def write_careless(path: Path) -> Path:
    careless_photo().save_as(path, enforce_file_format=True)
    data = path.read_bytes().lower()
    missing = [m for m in careless_markers() if m.lower().encode() not in data]
    assert missing == [], f"the careless photo lacks {missing}"  # else the leak test means nothing
    return path


# -- what may not leak -----------------------------------------------------------------------------

def _found(haystack: str, value: str) -> bool:
    """`value` in `haystack`, case-insensitively; a value shorter than 8 characters or all digits
    only as a whole word (so 'ID1' is not found inside a base32 pseudonym, nor '99999' inside a
    keyed 2.25 UID)."""
    value = value.strip()
    if not value:
        return False
    if len(value) >= 8 and not value.isdigit():
        return value.lower() in haystack.lower()
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", haystack,
                     re.IGNORECASE) is not None


def patient_values(ds: Dataset) -> list[str]:
    """The input's Patient ID and Patient's Name, whole and by component of 4+ characters."""
    out = [str(ds.get("PatientID", "") or "").strip()]
    name = str(ds.get("PatientName", "") or "").strip()
    out += [name, *(p for p in re.split(r"[\^=]", name) if len(p.strip()) >= 4)]
    return [v for v in out if v]


def instance_uids(ds: Dataset) -> list[str]:
    """Every UID value of the input's data set except well-known DICOM ones (1.2.840.10008...)."""
    found: set[str] = set()

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.value:
                values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) \
                    else [elem.value]
                found.update(str(v).strip("\0 ") for v in values)

    walk(ds)
    return sorted(u for u in found if u and not u.startswith("1.2.840.10008."))


def leaks_in_file(data: bytes, needles: Iterable[str], uids: Iterable[str] = ()) -> list[str]:
    """What of `needles` (case-insensitive) and `uids` (exact) appears anywhere in the file."""
    text = data.decode("latin-1")
    hits = [n for n in needles if _found(text, n)]
    hits += [u for u in uids if u.encode() in data]
    hits += markers_present(data)  # also UTF-16 and inside any zlib stream
    return sorted(set(hits))


def assert_no_phi_in_logs(caplog: pytest.LogCaptureFixture, needles: Iterable[str]) -> None:
    assert_no_phi_in_records(caplog.records, needles)


def assert_no_phi_in_records(records: list[logging.LogRecord], needles: Iterable[str]) -> None:
    """No needle in any record: its format string, its formatted message, its arguments."""
    assert records, "no log record was captured: the capture itself is broken"
    texts = []
    for record in records:
        texts += [str(record.msg), record.getMessage(), repr(record.args)]
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            texts.append(record.exc_text)
    logged = "\n".join(texts)
    leaked = [n for n in needles if _found(logged, n)]
    assert leaked == [], f"PHI in the node's logs: {leaked}"


_ERROR_VALUE = re.compile(r"= <.*>\s*$")
_QUOTED = re.compile(r'"[^"]*"')


def _normalised_errors(path: Path) -> Counter[str]:
    """dciodvfy's error lines with values taken out (names, UIDs and dates change on purpose)."""
    return Counter(_QUOTED.sub('""', _ERROR_VALUE.sub("= <>", line))
                   for line in dciodvfy_errors(path))


def new_dciodvfy_errors(before: Path, after: Path) -> list[str]:
    return sorted((_normalised_errors(after) - _normalised_errors(before)).elements())


# -- the rig ---------------------------------------------------------------------------------------

def settings(tmp_path: Path, pacs: EmbeddedOrthanc, **sections: Any) -> Settings:
    return node_settings(tmp_path, {"pacs": {"address": str(pacs.address), "retry": RETRY}},
                         **sections)


@contextmanager
def running(cfg: Settings) -> Iterator[Node]:
    node = Node(cfg, step_interval_s=0.2)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def secret_of(cfg: Settings) -> bytes:
    assert cfg.deid is not None
    return read_keys(cfg.deid.secret_file)[0]


def item_ids(node: Node) -> set[str]:
    return {i.id for i in node.journal.list(unfinished_only=False)}


def wait_purged(node: Node, ids: Iterable[str], what: str) -> list[Any]:
    ids = list(ids)

    def done() -> bool:
        items = [node.journal.get(i) for i in ids]
        stuck = [i for i in items if i is not None and i.state == State.QUARANTINED]
        assert not stuck, f"{what}: quarantined: {[i.reason for i in stuck]}"
        return all(i is not None and i.state == State.PURGED for i in items)

    wait_until(done, TIMEOUT_S, interval=0.05, what=what)
    return [node.journal.get(i) for i in ids]


def stored_file(pacs: EmbeddedOrthanc, sop_instance_uid: str) -> bytes:
    orthanc_id = pacs.find_instance(sop_instance_uid)
    assert orthanc_id, f"{sop_instance_uid} is not in Orthanc"
    return pacs.instance_file(orthanc_id)


def last_change(pacs: EmbeddedOrthanc) -> int:
    return int(pacs.get("/changes?last")["Last"])


def stored_since(pacs: EmbeddedOrthanc, change: int, sop_instance_uid: str) -> bool:
    """Orthanc stored this instance (again) after that change: with OverwriteInstances a resend
    replaces the instance and logs a new NewInstance, so it is the resent object that is read."""
    orthanc_id = pacs.find_instance(sop_instance_uid)
    changes = pacs.get(f"/changes?since={change}&limit=100")["Changes"]
    return any(c["ChangeType"] == "NewInstance" and c["ID"] == orthanc_id for c in changes)


def inbox_files(inbox: Path) -> list[str]:
    """What is left in the hot folder besides the door's own rejected/ and .photo-gateway/."""
    return sorted(p.name for p in inbox.iterdir() if p.name not in ("rejected", ".photo-gateway"))


def drop(inbox: Path, name: str, data: bytes, sidecar: dict[str, Any] | None = None) -> None:
    """As camera software does: write `<name>.part`, then rename (sidecar first)."""
    if sidecar is not None:
        (inbox / f"{name}.json.part").write_text(json.dumps(sidecar))
        os.rename(inbox / f"{name}.json.part", inbox / f"{name}.json")
    (inbox / f"{name}.part").write_bytes(data)
    os.rename(inbox / f"{name}.part", inbox / name)


# -- 1. the DICOM door -----------------------------------------------------------------------------

def storescu(port: int, path: Path) -> tuple[int, str]:
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    run = dcmtk("storescu", "-v", "-R", *STORESCU_TS_OPTION.get(ts, []), "-to", "10",
                "-aet", CALLING_AE, "-aec", "PHOTOGW", "127.0.0.1", str(port), str(path),
                timeout=30)
    return run.returncode, run.stdout + run.stderr


def test_storescu_photos_arrive_deidentified_once_and_a_ct_is_refused_at_association(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert len(DOOR_PHOTOS) >= 7, [p.name for p in DOOR_PHOTOS]
    careless = write_careless(tmp_path / "careless.dcm")
    inputs = [*DOOR_PHOTOS, careless]
    # Orthanc keeps the first object of a SOP Instance UID unless told to overwrite: overwriting
    # lets the resend below be read back (and still counts one instance per UID).
    pacs = EmbeddedOrthanc(tmp_path / "orthanc", extra_config={"OverwriteInstances": True})
    pacs.start()
    port = free_port()
    cfg = settings(tmp_path, pacs, node={
        "ae_title": "PHOTOGW", "host": "127.0.0.1", "port": port,
        "allowed_calling_aes": {CALLING_AE: {"default_consent": GRANTED}}})
    secret = secret_of(cfg)
    needles: list[str] = [*careless_markers(), CARELESS_BIRTH_DATE]
    try:
        caplog.set_level(logging.INFO)  # every logger, for the whole node run
        with running(cfg) as node:
            # The CT: refused at association, nothing staged.
            rc, out = storescu(port, CT_FILE)
            assert rc != 0 and re.search(r"no (acceptable )?presentation context|unable to convert",
                                         out, re.IGNORECASE), out
            assert item_ids(node) == set()
            needles += patient_values(_header(CT_FILE))

            first: dict[Path, tuple[str, str]] = {}  # input -> (SOP Instance UID, PatientID) out
            for path in inputs:
                original = pydicom.dcmread(path)
                before = item_ids(node)
                rc, out = storescu(port, path)
                assert rc == 0 and "Received Store Response (Success)" in out, (path.name, out)
                (new,) = item_ids(node) - before
                (item,) = wait_purged(node, [new], f"{path.name} to reach Orthanc")
                data = stored_file(pacs, item.sop_instance_uid)
                copy = tmp_path / f"orthanc-{path.stem}.dcm"
                copy.write_bytes(data)
                stored = pydicom.dcmread(copy)
                values = patient_values(original)
                needles += [*values, *instance_uids(original)]  # the door logs no input UID either
                extra = careless_markers() + [CARELESS_BIRTH_DATE] if path == careless else []
                leaked = leaks_in_file(data, [*values, *extra], instance_uids(original))
                assert leaked == [], path.name
                assert stored.SOPClassUID == original.SOPClassUID
                assert stored.PatientID == patient_pseudonym(
                    secret, str(original.get("IssuerOfPatientID", "") or ""), original.PatientID)
                assert new_dciodvfy_errors(path, copy) == [], path.name
                first[path] = (stored.SOPInstanceUID, stored.PatientID)

            # Distinct input SOP Instance UIDs give distinct instances: three of the pydicom test
            # files share one SOP Instance UID, and the gateway maps UIDs from the input's own.
            distinct_inputs = {str(_header(p).SOPInstanceUID) for p in inputs}
            assert len({uid for uid, _ in first.values()}) == len(distinct_inputs)
            count = pacs.instance_count()
            assert count == len(distinct_inputs)

            # The same files again: same pseudonym, same SOP Instance UID, one instance each.
            for path in inputs:
                before = item_ids(node)
                change = last_change(pacs)
                rc, out = storescu(port, path)
                assert rc == 0 and "Received Store Response (Success)" in out, (path.name, out)
                (new,) = item_ids(node) - before
                (item,) = wait_purged(node, [new], f"{path.name} resent to reach Orthanc")
                assert item.sop_instance_uid == first[path][0], path.name
                assert stored_since(pacs, change, item.sop_instance_uid), path.name
                again = pydicom.dcmread(io.BytesIO(stored_file(pacs, item.sop_instance_uid)))
                assert (again.SOPInstanceUID, again.PatientID) == first[path], path.name
            assert pacs.instance_count() == count  # exactly once
            stored_classes = {pacs.get(f"/instances/{i}/tags?simplify")["SOPClassUID"]
                              for i in pacs.get("/instances")}
            assert "1.2.840.10008.5.1.4.1.1.2" not in stored_classes  # the CT never arrived
        assert_no_phi_in_logs(caplog, needles)
    finally:
        pacs.stop()


# -- 2. the hot folder -----------------------------------------------------------------------------

FOLDER_PATIENT = {"id": "HFPAT55310", "issuer": "HOSP-MRN", "name": "HFFAMILYQ^HFGIVENZ",
                  "birth_date": "1968-04-12", "sex": "F"}
FOLDER_META = {
    "patient": FOLDER_PATIENT,
    "accession_number": "HFACC99117",
    "body_site": "left forearm", "laterality": "L",
    "description": "HFDESCRIPTK wound day 3",
    "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-20",
                "obtained_by_role": "nurse"},
    "operator_role": "nurse",
}
FOLDER_NEEDLES = ["HFPAT55310", "HFFAMILYQ", "HFGIVENZ", "HFACC99117", "HFDESCRIPTK", "19680412",
                  "1968-04-12"]


def test_hot_folder_photo_arrives_upright_and_clean_and_a_fake_jpeg_is_rejected(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # Upright 96 x 64, four coloured quadrants; stored sideways (64 x 96) and tagged 6.
    photo = make_jpeg(asymmetric_pattern(96, 64), orientation=6)
    stored = jpeg.read_info(photo)
    assert (stored.width, stored.height) == (64, 96)
    assert markers_present(photo)
    with EmbeddedOrthanc(tmp_path / "orthanc") as pacs:
        cfg = settings(tmp_path, pacs,
                       sources={"folder": {"path": str(inbox), "require_sidecar": True}})
        caplog.set_level(logging.INFO)  # every logger, for the whole node run
        with running(cfg) as node:
            drop(inbox, "wound.jpg", photo, FOLDER_META)
            # A text file named .jpg, with its sidecar (without one it waits for it, as any
            # photo does when require_sidecar is true): refused when the door reads it.
            drop(inbox, "notes.jpg", b"this is a note, not a photo MKNOTETEXT4\n", FOLDER_META)
            wait_until(lambda: pacs.instance_count() == 1 and inbox_files(inbox) == []
                       and node.journal.counts()[State.PURGED] == 1, TIMEOUT_S,
                       what="the photo in Orthanc, purged, and the inbox empty")
            (item,) = node.journal.list(unfinished_only=False)
            data = stored_file(pacs, item.sop_instance_uid)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert (ds.Columns, ds.Rows) == (stored.height, stored.width)  # upright: swapped
        assert quadrant_colours(Image.fromarray(ds.pixel_array)) == UPRIGHT_QUADRANTS
        assert leaks_in_file(data, FOLDER_NEEDLES) == []
        assert ds.PatientID == patient_pseudonym(secret_of(cfg), "HOSP-MRN", "HFPAT55310")
        rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
        assert rejected == ["notes.jpg", "notes.jpg.json", "notes.jpg.reason.txt"]
        reason = (inbox / "rejected" / "notes.jpg.reason.txt").read_text()
        assert reason.startswith("reason: not a JPEG, PNG, HEIC or DICOM file"), reason
        assert inbox_files(inbox) == []
        assert_no_phi_in_logs(caplog, [*FOLDER_NEEDLES, "MKNOTETEXT4", "wound.jpg", "notes.jpg",
                                        *(MARKERS[f] for f in JPEG_MARKER_FIELDS)])


# -- 3. the HTTP door ------------------------------------------------------------------------------

TOKEN = "e2e-token-" + "7" * 24
HTTP_PATIENT = {"id": "HTPAT40417", "issuer": "HOSP-MRN", "name": "HTFAMILYW^HTGIVENV"}
HTTP_META = {"patient": HTTP_PATIENT, "accession_number": "HTACC31415", "body_site": "chest",
             "description": "HTDESCRIPTM", "consent": GRANTED}
HTTP_NEEDLES = ["HTPAT40417", "HTFAMILYW", "HTGIVENV", "HTACC31415", "HTDESCRIPTM"]


def stow_body(parts: list[bytes], boundary: str) -> bytes:
    """multipart/related; type="application/dicom" (PS3.18 8.6.1.2.1), one instance per part."""
    out = b""
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_http_upload_and_stow_rs_arrive_in_orthanc_deidentified(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    http_port = free_port()
    careless = write_careless(tmp_path / "careless.dcm")
    photos = [make_jpeg(width=64, height=48, seed=11), make_jpeg(width=80, height=48, seed=12)]
    with EmbeddedOrthanc(tmp_path / "orthanc") as pacs:
        cfg = settings(tmp_path, pacs, sources={"http": {
            "port": http_port, "default_consent": GRANTED,
            "tokens": [{"name": "t", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}})
        auth = {"Authorization": f"Bearer {TOKEN}"}
        caplog.set_level(logging.INFO)  # every logger, for the whole node run
        with running(cfg) as node, \
                httpx.Client(base_url=f"http://127.0.0.1:{http_port}", headers=auth,
                             timeout=TIMEOUT_S) as web:
            posted = web.post("/photos", data={"metadata": json.dumps(HTTP_META)},
                              files=[("photos", (f"p{i}.jpg", p, "image/jpeg"))
                                     for i, p in enumerate(photos)])
            assert posted.status_code == 202, posted.text
            items = posted.json()["items"]
            assert [i["state"] for i in items] == ["received", "received"]
            ids = [i["id"] for i in items]

            def purged() -> bool:
                states = [web.get(f"/photos/{i}").json()["state"] for i in ids]
                assert "quarantined" not in states, states
                return states == ["purged", "purged"]
            wait_until(purged, TIMEOUT_S, interval=0.1, what="GET /photos/{id} to say purged")

            boundary = "e2e-stow-boundary-8d2f"
            stow = web.post("/studies", content=stow_body([careless.read_bytes()], boundary),
                            headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                                     f"boundary={boundary}",
                                     "Accept": "application/dicom+json"})
            assert stow.status_code == 200, stow.text
            assert "00081198" not in stow.json()  # no Failed SOP Sequence
            (stowed,) = [i for i in node.journal.list(unfinished_only=False) if i.kind == "dicom"]
            (stowed,) = wait_purged(node, [stowed.id], "the STOW-RS instance to reach Orthanc")
            photo_items = [node.journal.get(i) for i in ids]
        assert pacs.instance_count() == 3
        secret = secret_of(cfg)
        for item in photo_items:
            data = stored_file(pacs, item.sop_instance_uid)
            assert leaks_in_file(data, HTTP_NEEDLES) == []
            assert pydicom.dcmread(io.BytesIO(data)).PatientID == patient_pseudonym(
                secret, "HOSP-MRN", "HTPAT40417")
        data = stored_file(pacs, stowed.sop_instance_uid)
        original = pydicom.dcmread(careless)
        assert leaks_in_file(data, [*careless_markers(), CARELESS_BIRTH_DATE],
                             instance_uids(original)) == []
        copy = tmp_path / "orthanc-stow.dcm"
        copy.write_bytes(data)
        assert new_dciodvfy_errors(careless, copy) == []
        stored = pydicom.dcmread(copy)
        assert stored.SOPClassUID == VL_PHOTO and stored.PatientIdentityRemoved == "YES"
        assert stored.PatientID == patient_pseudonym(secret, "", CARELESS_MARKERS["PatientID"])
        assert_no_phi_in_logs(caplog, [*HTTP_NEEDLES, *careless_markers(), CARELESS_BIRTH_DATE,
                                       TOKEN])


# -- 4. the worklist -------------------------------------------------------------------------------

WL = {"accession": "WLACC42421", "patient_id": "WLPAT77810", "issuer": "WL-ISSUER-9",
      "name": "WLFAMILYP^WLGIVENR", "birth": "19550607",
      "study_uid": "1.2.826.0.1.3680043.8.498.770011"}
WL_NEEDLES = ["WLACC42421", "WLPAT77810", "WL-ISSUER-9", "WLFAMILYP", "WLGIVENR", "19550607"]


def write_worklist(wl_dir: Path) -> Path:
    """One `.wl` file made with DCMTK's dump2dcm (as in tests/gateway/test_worklist.py)."""
    dump = f"""\
(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{WL['accession']}]
(0010,0010) PN [{WL['name']}]
(0010,0020) LO [{WL['patient_id']}]
(0010,0021) LO [{WL['issuer']}]
(0010,0030) DA [{WL['birth']}]
(0010,0040) CS [M]
(0020,000d) UI [{WL['study_uid']}]
(0032,1060) LO [SYNTHETIC wound photo]
(0040,0100) SQ (Sequence with explicit length #=1)
  (fffe,e000) na (Item with explicit length #=4)
    (0008,0060) CS [XC]
    (0040,0001) AE [PHOTOGW]
    (0040,0002) DA [20261120]
    (0040,0009) SH [SPS-1]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
"""
    source = wl_dir.parent / "entry.dump"
    source.write_bytes(dump.encode("latin-1"))
    target = wl_dir / "entry.wl"
    run = dcmtk("dump2dcm", "+te", str(source), str(target))
    assert run.returncode == 0, run.stderr
    return target


@dataclass
class WorklistRun:
    config: Path
    secret: bytes
    stored: bytes  # the file Orthanc holds for the ordered photo
    inbox: Path
    records: list[logging.LogRecord]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def worklist_run(tmp_path_factory: pytest.TempPathFactory) -> WorklistRun:
    """One node run: an accession-only sidecar and an unknown accession dropped into the hot
    folder; the same Orthanc answers the worklist C-FIND and stores the photo. Every log record
    of the run (INFO and up, every logger) is kept, as caplog would (caplog is per test)."""
    assert os.path.exists(WORKLIST_PLUGIN), "Orthanc's worklist plugin (package orthanc) is missing"
    tmp_path = tmp_path_factory.mktemp("worklist")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    wl_dir = tmp_path / "worklists"
    wl_dir.mkdir()
    write_worklist(wl_dir)
    meta = {"accession_number": WL["accession"], "consent": GRANTED}
    unknown = {"accession_number": "WLACC00000", "consent": GRANTED}
    root = logging.getLogger()
    capture, level = _Records(), root.level
    with EmbeddedOrthanc(tmp_path / "orthanc", plugins=[WORKLIST_PLUGIN], extra_config={
            "Worklists": {"Enable": True, "Database": str(wl_dir)},
            "DicomAlwaysAllowFindWorklist": True}) as pacs:
        cfg = settings(tmp_path, pacs, worklist={"address": str(pacs.address)},
                       sources={"folder": {"path": str(inbox), "require_sidecar": True}})
        config = tmp_path / "gateway.yaml"
        config.write_text(cfg.model_dump_json())
        root.addHandler(capture)
        root.setLevel(logging.INFO)
        try:
            with running(cfg) as node:
                drop(inbox, "ordered.jpg", make_jpeg(width=64, height=48, seed=21), meta)
                drop(inbox, "unordered.jpg", make_jpeg(width=64, height=48, seed=22), unknown)
                wait_until(lambda: pacs.instance_count() == 1 and inbox_files(inbox) == []
                           and node.journal.counts()[State.PURGED] == 1, TIMEOUT_S,
                           what="the ordered photo in Orthanc and the inbox empty")
                (item,) = node.journal.list(unfinished_only=False)
                stored = stored_file(pacs, item.sop_instance_uid)
        finally:
            root.removeHandler(capture)
            root.setLevel(level)
    return WorklistRun(config, secret_of(cfg), stored, inbox, capture.records)


def test_accession_only_sidecar_is_filed_under_the_worklist_patient_and_study(
        worklist_run: WorklistRun, cli_env: dict[str, str]) -> None:
    ds = pydicom.dcmread(io.BytesIO(worklist_run.stored))
    pseudonym = patient_pseudonym(worklist_run.secret, WL["issuer"], WL["patient_id"])
    assert ds.PatientID == pseudonym
    assert ds.StudyInstanceUID == map_uid(worklist_run.secret, WL["study_uid"])
    looked_up = run_cli("lookup", WL["patient_id"], "--issuer", WL["issuer"],
                        "--config", str(worklist_run.config), env=cli_env)
    assert looked_up.returncode == 0, looked_up.stderr
    assert looked_up.stdout.strip() == pseudonym
    assert leaks_in_file(worklist_run.stored, WL_NEEDLES, [WL["study_uid"]]) == []


def test_an_accession_the_worklist_does_not_know_is_rejected_with_the_reason(
        worklist_run: WorklistRun) -> None:
    rejected = worklist_run.inbox / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == \
        ["unordered.jpg", "unordered.jpg.json", "unordered.jpg.reason.txt"]
    reason = (rejected / "unordered.jpg.reason.txt").read_text()
    assert reason.startswith("reason: no worklist entry"), reason


def test_the_worklist_answer_is_in_no_log_record(worklist_run: WorklistRun) -> None:
    assert_no_phi_in_records(worklist_run.records, [*WL_NEEDLES, "WLACC00000"])
