"""DICOM inputs: photo objects from devices leave de-identified, bitstream included, under their
own SOP class; anything else, or anything broken, is refused with a reason and a DICOM status."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, dciodvfy_errors
from dicom_factory import (
    BIRTH_DATE,
    DICOM_MARKERS,
    INPUT_UIDS,
    base,
    careless_markers,
    careless_photo,
    with_jpeg,
)
from photo_factory import make_jpeg, markers_present
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dicom_mapping import consent as consent_attrs
from dicom_mapping import jpeg
from dicom_mapping.dicom_input import (
    PHOTO_SOP_CLASSES,
    DicomParams,
    convert_dicom,
    read_dicom,
)
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import Consent
from dicom_mapping.uids import patient_pseudonym

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(100, 132))
GRANTED = Consent(status="granted", scope=("clinical-care",))
PARAMS = DicomParams(secret=SECRET, default_consent=GRANTED)

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
CT = "1.2.840.10008.5.1.4.1.1.2"

# Every file of tests/data/dicom/ is listed here, converted or refused (a new file needs a line).
CONVERTED = (
    "sc_jpeg_baseline_ybr_full.dcm",
    "sc_jpeg_baseline_ybr_full_422.dcm",
    "sc_rgb_2frame_explicit_le.dcm",
    "sc_rgb_3x3_odd_jpeg_baseline.dcm",
    "sc_rgb_explicit_le.dcm",
    "sc_rgb_rle_2frame.dcm",
    "sc_ybr_full_422_uncompressed.dcm",
    "vl_photo_xc_mono_explicit_le.dcm",
)
REFUSED = {
    "ct_small_non_photo_patient_tags.dcm": (
        0x0122,
        r"CT Image Storage\) is not a photo storage class",
    ),
    "us_multiframe_jpeg_baseline_ybr422.dcm": (
        0x0122,
        r"Ultrasound Multi-frame .* not a photo storage class",
    ),
    # Patient ID empty: one pseudonym would collect every such object of every patient.
    "sc_jpeg_baseline_rgb_no_transform.dcm": (0xC000, r"no Patient ID \(0010,0020\)"),
}
BROKEN = {
    "dicom_truncated_pixel_data.dcm": (
        r"element \(7FE0,0010\) declares 8192 bytes but the data ends after 8130: truncated"
    ),
    "dicom_meta_missing_transfer_syntax.dcm": r"no Transfer Syntax UID \(0002,0010\)",
    "dicom_no_preamble_dicm_in_data.dcm": (
        r"bare dataset .*'DICM' at offset 128 are part of an element value"
    ),
    "dicom_j2k_corrupt_codestream.dcm": (
        r"frame 1: JPEG 2000: SIZ declares \d+ x 1024 .* the dataset says 256 x 1024"
    ),
}


# --- helpers ---------------------------------------------------------------------------------


def _normalised_errors(path: Path) -> Counter[str]:
    """dciodvfy's error lines with values taken out (names, UIDs and dates change on purpose)."""
    lines = []
    for line in dciodvfy_errors(path):
        line = re.sub(r"= <.*>\s*$", "= <>", line)
        line = re.sub(r'"[^"]*"', '""', line)
        lines.append(line)
    return Counter(lines)


def _new_errors(before: Path, after: Path) -> list[str]:
    """Errors of `after` that `before` does not have (as many times)."""
    return sorted((_normalised_errors(after) - _normalised_errors(before)).elements())


def _save(ds: Dataset, path: Path) -> bytes:
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _convert_file(data: bytes, params: DicomParams = PARAMS):
    return convert_dicom(read_dicom(data), params)


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _jpeg_photo(frame: bytes, *, photometric: str = "YBR_FULL_422", sop_class: str = SC) -> Dataset:
    return _with_jpeg(_base(sop_class, jpeg.JPEG_BASELINE), [frame], photometric=photometric)


def _frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


# --- the test files ----------------------------------------------------------------------------


def test_every_test_file_has_an_expected_outcome():
    assert {p.name for p in (DATA / "dicom").glob("*.dcm")} == set(CONVERTED) | set(REFUSED)
    assert {p.name for p in (DATA / "broken").glob("dicom_*.dcm")} == set(BROKEN)


@pytest.mark.parametrize("name", CONVERTED)
def test_a_photo_object_converts_with_its_class_its_pixels_and_no_new_dciodvfy_error(
    name, tmp_path
):
    source = DATA / "dicom" / name
    original = dcmread(source)
    converted = _convert_file(source.read_bytes())
    out_path = tmp_path / "out.dcm"
    _save(converted.dataset, out_path)
    back = dcmread(out_path)

    assert back.SOPClassUID == original.SOPClassUID
    assert back.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert back.SOPInstanceUID != original.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.StudyInstanceUID != original.StudyInstanceUID
    assert back.PatientID == patient_pseudonym(SECRET, "", original.PatientID)
    assert back.PatientIdentityRemoved == "YES"
    assert back.PhotometricInterpretation == original.PhotometricInterpretation
    assert _new_errors(source, out_path) == []
    # Segments dropped from JPEG frames (none here but the pad) leave the decode unchanged.
    assert np.array_equal(back.pixel_array, original.pixel_array)


def test_an_rgb_jpeg_without_colour_markers_keeps_its_rgb_label_once_it_has_a_patient_id(tmp_path):
    """No JFIF, no Adobe, component ids 0, 1, 2: the DICOM label is all that says RGB (PS3.5
    8.2.1). Relabelling it YBR (libjpeg's guess) would show it pink and green."""
    source = DATA / "dicom" / "sc_jpeg_baseline_rgb_no_transform.dcm"
    ds = read_dicom(source.read_bytes())
    ds.PatientID = "PID-RGB"
    converted = convert_dicom(ds, PARAMS)
    out_path = tmp_path / "out.dcm"
    _save(converted.dataset, out_path)
    back = dcmread(out_path)
    assert back.PhotometricInterpretation == "RGB"
    assert not any("relabelled" in n for n in converted.notes)
    assert np.array_equal(back.pixel_array, dcmread(source).pixel_array)
    assert _new_errors(source, out_path) == []


@pytest.mark.parametrize(("name", "expected"), sorted(REFUSED.items()))
def test_a_test_file_that_may_not_leave_is_refused_with_its_status(name, expected):
    status, reason = expected
    with pytest.raises(InputError, match=reason) as err:
        _convert_file((DATA / "dicom" / name).read_bytes())
    assert err.value.status == status


def test_a_class_the_config_adds_is_converted_without_a_new_error(tmp_path):
    source = DATA / "dicom" / "ct_small_non_photo_patient_tags.dcm"
    params = DicomParams(
        secret=SECRET, default_consent=GRANTED, allowed_sop_classes=PHOTO_SOP_CLASSES | {CT}
    )
    converted = _convert_file(source.read_bytes(), params)
    out_path = tmp_path / "ct.dcm"
    data = _save(converted.dataset, out_path)
    assert dcmread(out_path).SOPClassUID == CT
    assert b"compressedsamples" not in data.lower()
    assert _new_errors(source, out_path) == []


@pytest.mark.parametrize(("name", "reason"), sorted(BROKEN.items()))
def test_a_broken_object_is_refused_with_a_specific_reason(name, reason):
    with pytest.raises(InputError, match=reason) as err:
        _convert_file((DATA / "broken" / name).read_bytes())
    assert err.value.status == 0xC000


def test_a_file_cut_anywhere_gives_an_input_error_and_never_another_exception():
    data = (DATA / "dicom" / "sc_rgb_3x3_odd_jpeg_baseline.dcm").read_bytes()
    outcomes = Counter()
    for end in range(0, len(data), 3):
        try:
            _convert_file(data[:end])
            outcomes["converted"] += 1
        except InputError:
            outcomes["refused"] += 1
    assert outcomes["refused"] == len(range(0, len(data), 3))  # each cut loses Pixel Data's end


def test_garbage_in_any_byte_gives_an_input_error_or_a_clean_object():
    data = bytearray((DATA / "dicom" / "sc_jpeg_baseline_ybr_full_422.dcm").read_bytes())
    rng = np.random.default_rng(7)
    for _ in range(150):
        damaged = bytearray(data)
        for pos in rng.integers(132, len(data), size=3):
            damaged[pos] = int(rng.integers(0, 256))
        try:
            _convert_file(bytes(damaged))
        except InputError as exc:
            assert exc.status in (0x0122, 0x0124, 0xC000)


# --- the bare dataset of a C-STORE -----------------------------------------------------------


def _bare(ds: Dataset, *, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize(
    ("ts", "implicit", "deflate"),
    [
        ("1.2.840.10008.1.2", True, False),
        ("1.2.840.10008.1.2.1", False, False),
        ("1.2.840.10008.1.2.1.99", False, True),
    ],
)
def test_a_bare_dataset_with_its_transfer_syntax_gives_the_same_object_as_the_file(
    ts, implicit, deflate
):
    source = DATA / "dicom" / "sc_rgb_explicit_le.dcm"
    from_file = _convert_file(source.read_bytes()).dataset
    data = _bare(dcmread(source), implicit=implicit)
    if deflate:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    ds = read_dicom(data, transfer_syntax=ts)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    from_bare = convert_dicom(ds, PARAMS).dataset
    assert from_bare.SOPInstanceUID == from_file.SOPInstanceUID
    assert from_bare.PixelData == from_file.PixelData
    assert str(from_bare.file_meta.TransferSyntaxUID) == ("1.2.840.10008.1.2.1" if deflate else ts)


def test_a_bare_dataset_cut_short_or_without_a_known_transfer_syntax_is_refused():
    data = _bare(dcmread(DATA / "dicom" / "sc_rgb_explicit_le.dcm"), implicit=False)
    with pytest.raises(InputError, match="truncated"):
        read_dicom(data[:-100], transfer_syntax="1.2.840.10008.1.2.1")
    with pytest.raises(InputError, match="not a known transfer syntax"):
        read_dicom(data, transfer_syntax="1.2.3.4")
    with pytest.raises(InputError, match="no 'DICM' prefix|bare dataset"):
        read_dicom(data)  # without a transfer syntax, a Part 10 file is required


# --- the careless DICOM photo ----------------------------------------------------------------

_base, _with_jpeg, _all_markers = base, with_jpeg, careless_markers
BIRTH_DATE_SPELLINGS = ("19710203", "1971-02-03", "03/02/1971", "02/03/1971", "03.02.1971")


def test_the_careless_photo_carries_every_marker_before_conversion(tmp_path):
    """The leak test below means something only if the input really carries them all."""
    data = _part10(careless_photo()).lower()
    missing = [m for m in _all_markers() if m.lower().encode() not in data]
    assert missing == []
    assert BIRTH_DATE.encode() in data
    assert all(uid.encode() in data for uid in INPUT_UIDS.values())
    assert len(DICOM_MARKERS) >= 15


def test_no_marker_of_a_careless_photo_reaches_any_byte_of_the_file(tmp_path):
    source = tmp_path / "in.dcm"
    source.write_bytes(_part10(careless_photo()))
    converted = _convert_file(source.read_bytes())
    out_path = tmp_path / "out.dcm"
    data = _save(converted.dataset, out_path)
    lower = data.lower()

    assert [m for m in _all_markers() if m.lower().encode() in lower] == []
    assert markers_present(data) == []  # also UTF-16 and inside any zlib stream
    assert [d for d in BIRTH_DATE_SPELLINGS if d.encode() in data] == []
    assert [k for k, uid in INPUT_UIDS.items() if uid.encode() in data] == []
    back = dcmread(out_path)
    assert "IconImageSequence" not in back
    assert not any(0x5000 <= e.tag.group <= 0x60FF for e in back)  # curves and overlays
    assert [e.tag for e in back if e.tag.is_private and e.tag.group != 0x0013] == []
    for frame in _frames(back):
        kept = {seg.marker for seg in jpeg.segments(frame)} - set(range(0xD0, 0xD8))
        assert kept <= {0xD8, 0xE0, 0xDB, 0xC0, 0xC4, 0xDA, 0xD9}
    assert back.ICCProfile  # the frame's ICC profile, moved where DICOM keeps it
    assert _new_errors(source, out_path) == []
    assert np.array_equal(back.pixel_array, dcmread(source).pixel_array)


_SUBPROCESS = """
import json, sys
from pathlib import Path
from dicom_mapping.dicom_input import DicomParams, convert_dicom, read_dicom
from dicom_mapping.metadata import Consent
params = DicomParams(secret=bytes.fromhex(sys.argv[2]), default_consent=Consent(status="granted"))
out = convert_dicom(read_dicom(Path(sys.argv[1]).read_bytes()), params).dataset
print(json.dumps([out.SOPInstanceUID, out.StudyInstanceUID, out.SeriesInstanceUID,
                  out.FrameOfReferenceUID, out.PatientID, str(out.PatientName)]))
"""


def _identity(ds: Dataset) -> list[str]:
    return [
        ds.SOPInstanceUID,
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.FrameOfReferenceUID,
        ds.PatientID,
        str(ds.PatientName),
    ]


def test_same_object_same_uids_and_pseudonym_in_two_processes_other_secret_others(
    tmp_path,
):
    source = tmp_path / "in.dcm"
    source.write_bytes(_part10(careless_photo()))
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, str(source), SECRET.hex()],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=True,
        )
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1]
    assert runs[0] == _identity(_convert_file(source.read_bytes()).dataset)
    other = _identity(
        _convert_file(
            source.read_bytes(), DicomParams(secret=OTHER_SECRET, default_consent=GRANTED)
        ).dataset
    )
    assert all(a != b for a, b in zip(runs[0], other, strict=True))


def test_the_same_object_twice_gives_the_same_bytes():
    data = _part10(careless_photo())
    assert _part10(_convert_file(data).dataset) == _part10(_convert_file(data).dataset)


# --- consent ---------------------------------------------------------------------------------


def _with_consent(ds: Dataset, *flags: str) -> Dataset:
    items = []
    for flag in flags:
        item = Dataset()
        item.ConsentForDistributionFlag = flag
        if flag == "YES":
            item.DistributionType = "RESTRICTED_REUSE"
        items.append(item)
    ds.ConsentForClinicalTrialUseSequence = Sequence(items)
    return ds


def _photo() -> Dataset:
    return _jpeg_photo(make_jpeg(width=32, height=16))


def _assumed(out: Dataset) -> str:
    return out.private_block(consent_attrs.PRIVATE_GROUP, consent_attrs.PRIVATE_CREATOR)[0x05].value


def test_the_objects_own_granted_consent_is_used_even_without_a_default():
    out = convert_dicom(_with_consent(_photo(), "YES"), DicomParams(secret=SECRET)).dataset
    assert out.ConsentForClinicalTrialUseSequence[0].ConsentForDistributionFlag == "YES"
    assert _assumed(out) == "NO"


@pytest.mark.parametrize(
    ("flags", "said"),
    [(("WITHDRAWN",), "withdrawn"), (("NO",), "refused"), (("YES", "WITHDRAWN"), "withdrawn")],
)
def test_a_withdrawn_or_refused_consent_in_the_object_is_refused_whatever_the_default(flags, said):
    with pytest.raises(InputError, match=f"consent {said}") as err:
        convert_dicom(_with_consent(_photo(), *flags), PARAMS)
    assert err.value.status == 0x0124


def test_a_consent_item_without_a_known_flag_is_refused_not_replaced_by_the_default():
    with pytest.raises(InputError, match=r"\(0012,0085\)") as err:
        convert_dicom(_with_consent(_photo(), "MAYBE"), PARAMS)
    assert err.value.status == 0x0124


def test_no_consent_and_no_default_is_refused():
    with pytest.raises(InputError, match="no consent") as err:
        convert_dicom(_photo(), DicomParams(secret=SECRET))
    assert err.value.status == 0x0124


def test_the_default_consent_is_recorded_as_assumed():
    converted = convert_dicom(_photo(), PARAMS)
    out = converted.dataset
    assert out.ConsentForClinicalTrialUseSequence[0].ConsentForDistributionFlag == "YES"
    assert _assumed(out) == "YES"
    assert consent_attrs.read_consent(out).assumed is True
    assert any("assumed" in n for n in converted.notes)


def test_a_consent_block_in_an_implicit_vr_object_is_read_and_its_date_shifted():
    """Implicit VR gives private values as bytes: the block is still read, not refused."""
    import datetime as dt

    ds = dcmread(DATA / "dicom" / "sc_rgb_explicit_le.dcm")
    record = Consent(
        status="granted",
        scope=("teaching", "research"),
        date=dt.date(2026, 3, 1),
        obtained_by_role="nurse",
    )
    consent_attrs.add_consent(ds, record, record.date)
    data = _bare(ds, implicit=True)
    read = read_dicom(data, transfer_syntax="1.2.840.10008.1.2")
    assert isinstance(read.private_block(0x0013, consent_attrs.PRIVATE_CREATOR)[0x01].value, bytes)
    out = convert_dicom(read, DicomParams(secret=SECRET)).dataset
    got = consent_attrs.read_consent(out)
    assert got.scope == ("teaching", "research")
    assert got.obtained_by_role == "nurse"
    assert got.date is not None and got.date < record.date  # shifted with the patient's dates


# --- policy ----------------------------------------------------------------------------------


def test_burned_in_annotation_yes_is_refused_as_not_authorized():
    ds = _photo()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InputError, match="Burned In Annotation") as err:
        convert_dicom(ds, PARAMS)
    assert err.value.status == 0x0124


def test_an_object_with_a_blank_patient_id_is_refused():
    ds = _photo()
    ds.PatientID = "  "
    with pytest.raises(InputError, match="no Patient ID") as err:
        convert_dicom(ds, PARAMS)
    assert err.value.status == 0xC000


def test_a_transfer_syntax_whose_bitstream_we_cannot_inspect_is_refused():
    ds = _photo()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.102")  # MPEG-4 AVC/H.264
    with pytest.raises(InputError, match="cannot be inspected"):
        convert_dicom(ds, PARAMS)


def test_a_jpeg_frame_that_does_not_match_its_transfer_syntax_is_refused():
    frame = make_jpeg(width=16, height=16, progressive=False)
    ds = _jpeg_photo(frame)
    ds.file_meta.TransferSyntaxUID = UID(jpeg.JPEG_LOSSLESS_SV1)
    with pytest.raises(InputError, match="does not match transfer syntax"):
        convert_dicom(ds, PARAMS)


def test_a_jpeg_frame_of_another_size_than_the_dataset_says_is_refused():
    ds = _photo()
    ds.Rows = 17
    with pytest.raises(InputError, match="the dataset says 32 x 17"):
        convert_dicom(ds, PARAMS)


# --- photometric interpretation --------------------------------------------------------------


def test_an_rgb_label_on_a_jfif_ycbcr_stream_is_relabelled_and_noted():
    converted = convert_dicom(
        _jpeg_photo(make_jpeg(width=32, height=16), photometric="RGB"), PARAMS
    )
    assert converted.dataset.PhotometricInterpretation == "YBR_FULL_422"
    assert any("contradicted the bitstream (JFIF APP0)" in n for n in converted.notes)


def test_a_jfif_that_contradicted_adobe_rgb_is_dropped_and_the_agreeing_label_kept_with_a_note():
    frame = make_jpeg(width=32, height=16, adobe_rgb=True, jfif=True)
    converted = convert_dicom(_jpeg_photo(frame, photometric="RGB"), PARAMS)
    assert converted.dataset.PhotometricInterpretation == "RGB"
    assert any("JFIF APP0 contradicting Adobe" in n for n in converted.notes)
    assert not any(s.marker == 0xE0 for s in jpeg.segments(_frames(converted.dataset)[0]))


def test_a_ybr_label_on_an_adobe_rgb_stream_is_relabelled_rgb_and_noted():
    frame = make_jpeg(width=32, height=16, adobe_rgb=True, jfif=True)
    converted = convert_dicom(_jpeg_photo(frame, photometric="YBR_FULL_422"), PARAMS)
    assert converted.dataset.PhotometricInterpretation == "RGB"
    assert any("relabelled RGB" in n and "contradicting JFIF" in n for n in converted.notes)


# --- multi-frame and other encapsulations ----------------------------------------------------


def test_every_frame_of_a_multiframe_jpeg_is_sanitized_and_reencapsulated(tmp_path):
    frames = [make_jpeg(width=32, height=16, seed=s) for s in range(3)]
    ds = _with_jpeg(_base(MF_TRUE_COLOR_SC, jpeg.JPEG_BASELINE), frames, photometric="YBR_FULL_422")
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100
    source = tmp_path / "in.dcm"
    source.write_bytes(_part10(ds))
    converted = _convert_file(source.read_bytes())
    out_path = tmp_path / "out.dcm"
    data = _save(converted.dataset, out_path)
    back = dcmread(out_path)
    assert back.NumberOfFrames == 3
    assert back["PixelData"].is_undefined_length
    out_frames = _frames(back)
    assert len(out_frames) == 3
    for out_frame, frame in zip(out_frames, frames, strict=True):
        clean = jpeg.sanitize(frame).bitstream
        assert out_frame[: len(clean)] == clean and out_frame[len(clean) :] in (b"", b"\x00")
    assert markers_present(data) == []
    assert np.array_equal(back.pixel_array, dcmread(source).pixel_array)
    assert _new_errors(source, out_path) == []


def _grey(width: int = 40, height: int = 24) -> np.ndarray:
    return ((np.arange(width * height) * 7) % 251).astype(np.uint8).reshape(height, width)


def _native_grey_photo(ts: str, frame: bytes, pixels: np.ndarray) -> Dataset:
    ds = _base(SC, ts)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def test_comment_markers_are_removed_from_a_jpeg_2000_codestream(tmp_path):
    pixels = _grey()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG2000", no_jp2=True, comment=b"DMJ2KCOMMT3 by someone")
    codestream = buf.getvalue()
    assert codestream.count(b"\xff\x64") >= 1
    ds = _native_grey_photo("1.2.840.10008.1.2.4.90", codestream, pixels)
    source = tmp_path / "in.dcm"
    source.write_bytes(_part10(ds))
    converted = _convert_file(source.read_bytes())
    out_path = tmp_path / "out.dcm"
    data = _save(converted.dataset, out_path)
    assert b"dmj2kcommt3" not in data.lower()
    assert any("COM marker segment" in n for n in converted.notes)
    assert np.array_equal(dcmread(out_path).pixel_array, pixels)
    assert _new_errors(source, out_path) == []


def test_a_jp2_file_format_wrapper_is_refused():
    buf = io.BytesIO()
    Image.fromarray(_grey()).save(buf, "JPEG2000")  # .jp2 boxes around the codestream
    ds = _native_grey_photo("1.2.840.10008.1.2.4.90", buf.getvalue(), _grey())
    with pytest.raises(InputError, match="JP2 file format"):
        convert_dicom(ds, PARAMS)


def test_app_and_comment_segments_are_removed_from_a_jpeg_ls_frame(tmp_path):
    import jpeg_ls

    pixels = _grey()
    stream = bytes(jpeg_ls.encode(pixels))
    extra = (
        b"\xff\xfe"
        + struct.pack(">H", 2 + 11)
        + b"DMJLSCOMM4Y"
        + b"\xff\xe8"
        + struct.pack(">H", 2 + 11)
        + b"DMJLSAPP8U5"
    )
    ds = _native_grey_photo("1.2.840.10008.1.2.4.80", stream[:2] + extra + stream[2:], pixels)
    source = tmp_path / "in.dcm"
    source.write_bytes(_part10(ds))
    converted = _convert_file(source.read_bytes())
    out_path = tmp_path / "out.dcm"
    data = _save(converted.dataset, out_path)
    assert b"dmjls" not in data.lower()
    assert any("COM" in n and "APP8" in n for n in converted.notes)
    assert _frames(dcmread(out_path))[0].rstrip(b"\x00") == stream.rstrip(b"\x00")
    assert np.array_equal(dcmread(out_path).pixel_array, pixels)
    assert _new_errors(source, out_path) == []


def test_native_pixel_data_longer_than_described_is_refused():
    ds = dcmread(DATA / "dicom" / "sc_rgb_explicit_le.dcm")
    ds.PixelData = ds.PixelData + b"DMHIDDEN" * 4
    with pytest.raises(InputError, match="more than the 30000 its attributes describe"):
        _convert_file(_part10(ds))


def test_a_comment_in_a_jpeg_2000_tile_part_header_is_removed_and_its_length_fixed(tmp_path):
    pixels = _grey()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG2000", no_jp2=True)
    codestream = buf.getvalue()
    sot = codestream.index(b"\xff\x90\x00\x0a")
    com = b"\xff\x64" + struct.pack(">HH", 2 + 2 + 12, 1) + b"DMTILECOMM6R"
    psot = int.from_bytes(codestream[sot + 6 : sot + 10], "big")
    assert psot  # Pillow (OpenJPEG) writes the tile-part length
    tampered = (
        codestream[: sot + 6]
        + (psot + len(com)).to_bytes(4, "big")
        + codestream[sot + 10 : sot + 12]
        + com
        + codestream[sot + 12 :]
    )
    ds = _native_grey_photo("1.2.840.10008.1.2.4.90", tampered, pixels)
    assert np.array_equal(ds.pixel_array, pixels)  # the tampered codestream is valid
    out = convert_dicom(ds, PARAMS).dataset
    untampered = convert_dicom(
        _native_grey_photo("1.2.840.10008.1.2.4.90", codestream, pixels), PARAMS
    )
    assert b"DMTILECOMM6R" not in _frames(out)[0]
    assert _frames(out) == _frames(untampered.dataset)  # Psot back to the original value
    assert np.array_equal(out.pixel_array, pixels)


def test_a_senders_private_block_under_our_consent_creator_keeps_only_the_consent():
    ds = _photo()
    consent_attrs.add_consent(ds, GRANTED, None)
    block = ds.private_block(consent_attrs.PRIVATE_GROUP, consent_attrs.PRIVATE_CREATOR)
    block.add_new(0x10, "LO", "DMSMUGGLED7T")
    out = convert_dicom(ds, DicomParams(secret=SECRET)).dataset
    assert b"dmsmuggled7t" not in _part10(out).lower()
    assert consent_attrs.read_consent(out).scope == ("clinical-care",)


def test_exif_text_that_is_text_of_the_kept_icc_profile_does_not_get_the_object_refused():
    """As with an iPhone's EXIF Make "Apple" and Apple's Display P3 profile (convert.py)."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "mntrRGB XYZ"  # Make: the ICC header's class + colour space + PCS, as text
    exif[0x013B] = "DMARTISTEX8P"  # Artist: a real identifier, which must go
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 150, 120)).save(buf, "JPEG", exif=exif, icc_profile=icc)
    converted = convert_dicom(_jpeg_photo(buf.getvalue()), PARAMS)
    assert converted.dataset.ICCProfile == icc
    assert b"dmartistex8p" not in _part10(converted.dataset).lower()
