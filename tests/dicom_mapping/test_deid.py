"""De-identification (PS3.15 Annex E): the table, its actions, and what reaches the bytes."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import config, dcmread, dcmwrite
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pydicom.valuerep import validate_value

from dicom_mapping.deid import (
    OPTIONS,
    DeidContext,
    ProfileRow,
    action_for,
    deidentify,
    mark_deidentified,
    profile_rows,
)
from dicom_mapping.uids import map_uid, patient_pseudonym

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
PSEUDONYM = patient_pseudonym(SECRET, "HOSP-MRN", "123456")
SHIFT = -10
MODIFIED = "retain-longitudinal-modified-dates"
HERE = Path(__file__).resolve().parent


def ctx(options: set[str] | frozenset[str] = frozenset(), **kw: Any) -> DeidContext:
    return DeidContext(
        secret=kw.pop("secret", SECRET),
        patient_pseudonym=PSEUDONYM,
        options=frozenset(options),
        date_shift_days=SHIFT,
        **kw,
    )


# --- (a) every row of the table ------------------------------------------------------------

ROWS = profile_rows()
# The resolution the brief specifies (PS3.15 E.1.1), written out again so that the module's
# own resolution is checked, not reused.
RESOLVED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
# A nested row sits in an item of this sequence, which the table does not list (kept).
CONTAINER = 0x0018A001  # Contributing Equipment Sequence


def concrete_tag(row: ProfileRow) -> int | None:
    """The tag to test a row with: x -> 0 ((60xx,3000) -> (6000,3000)); None for a class."""
    if row.tag == "ggggeeee":
        return None
    return int(row.tag.replace("x", "0"), 16)


def usable_vr(row: ProfileRow) -> str | None:
    """The VR of the row's tag in pydicom's dictionary (first of "OB or OW"), if it has one."""
    tag = concrete_tag(row)
    if tag is None:
        return None
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return None


USABLE = [r for r in ROWS if usable_vr(r)]
UNUSABLE = [r for r in ROWS if not usable_vr(r)]


def expected_action(row: ProfileRow, option: str | None) -> str:
    action = row.options[option] if option else row.basic
    return RESOLVED.get(action, action)


# Every usable row: at the top level with no option, one level down inside a kept sequence
# (every row but the File Meta one, not only a sample: it costs little), and under each option
# that changes its action.
CASES = [
    pytest.param(
        row, option, nested, id=f"{row.tag}-{row.keyword}-{option or 'basic'}{'-nested' * nested}"
    )
    for row in USABLE
    for option, nested in (
        [(None, False)]
        + ([(None, True)] if not row.tag.startswith("0002") else [])
        + [(o, False) for o in row.options if expected_action(row, o) != expected_action(row, None)]
    )
]


def test_table_rows_and_the_two_without_a_dictionary_vr() -> None:
    # Measured: 621 rows; all but the curve-data group (50xx,xxxx) and the private-attributes
    # row have a tag in pydicom's dictionary. Those two are classes of elements, tested in the
    # careless-photo test below.
    assert len(ROWS) == 621
    assert sorted(r.tag for r in UNUSABLE) == ["50xxxxxx", "ggggeeee"]
    assert len(USABLE) == 619


def marker(tag: int, vr: str) -> Any:
    text = f"{tag:08X}"
    if vr in ("CS", "AE", "SH"):
        return f"MRK{text}"
    if vr == "PN":
        return f"MARKER^T{text}"
    if vr == "DA":
        return "20210315"
    if vr == "DT":
        return "20210315123456.000000+0100"
    if vr == "TM":
        return "123456"
    if vr == "AS":
        return "042Y"
    if vr == "DS":
        return "12.5"
    if vr == "IS":
        return "42"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.999.{tag}"
    if vr == "UR":
        return f"http://marker.invalid/{text}"
    if vr in ("US", "SS", "UL", "SL"):
        return 7
    if vr in ("OB", "OW", "UN"):
        return b"MRKR"
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "MRKSQ"
        item.TextValue = "MRK FREE TEXT"
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.7"
        return Sequence([item])
    return f"MARKER {text}"


def shifted(value: str, vr: str) -> str:
    day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=SHIFT)
    return day.strftime("%Y%m%d") + (value[8:] if vr == "DT" else "")


def is_empty(value: Any) -> bool:
    return value is None or len(value) == 0


@pytest.mark.parametrize(("row", "option", "nested"), CASES)
def test_profile_row_action_is_applied(row: ProfileRow, option: str | None, nested: bool) -> None:
    tag = concrete_tag(row)
    assert tag is not None
    vr = usable_vr(row)
    assert vr is not None
    value = marker(tag, vr)
    options = frozenset({option}) if option else frozenset()
    expected = expected_action(row, option)
    overlay_or_curve = row.tag.startswith(("50", "60"))
    if not overlay_or_curve:  # (60xx): C under clean-graphics is done by removal, see below
        assert action_for(row, options) == expected

    ds = Dataset()
    if row.tag == "00020003":  # file meta: handled there (PS3.10 7.1)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.add_new(tag, vr, value)
    elif nested:
        item = Dataset()
        item.add_new(tag, vr, copy.deepcopy(value))
        ds.add_new(CONTAINER, "SQ", Sequence([item]))
    else:
        ds.add_new(tag, vr, copy.deepcopy(value))
    before = copy.deepcopy(ds)

    out = deidentify(ds, ctx(options))
    assert ds == before  # the input is untouched
    where: Dataset = out
    if row.tag == "00020003":
        where = out.file_meta
    elif nested:
        assert len(out[CONTAINER].value) == 1
        where = out[CONTAINER].value[0]

    if overlay_or_curve:
        # The whole 60xx group goes, with or without clean-graphics: we cannot clean a bitmap.
        assert tag not in where
        return
    top_identity = not nested and row.keyword in ("PatientName", "PatientID")
    if expected == "X":
        assert tag not in where
        return
    assert tag in where
    got = where[tag].value
    if top_identity:  # Z, then the pseudonym (README: Patient ID = Patient's Name = pseudonym)
        assert str(got) == PSEUDONYM
    elif expected == "Z":
        assert is_empty(got)
    elif expected == "K":
        if vr == "SQ":
            assert got[0].CodeValue == "MRKSQ"
            assert got[0].TextValue == "MRK FREE TEXT"
        else:
            assert got == value
    elif expected == "U":
        if vr == "SQ":  # X/Z/U*: the sequence stays, the UIDs inside are mapped
            assert got[0].CodeValue == "MRKSQ"
            assert got[0].ReferencedSOPInstanceUID == map_uid(
                SECRET, "1.2.826.0.1.3680043.10.999.7"
            )
        else:
            assert got == map_uid(SECRET, value)
    elif expected == "D":
        if vr == "SQ":
            assert len(got) == 0  # D on a sequence: emptied (documented in deid.py)
        elif vr == "UI":
            assert got == map_uid(SECRET, value)
        else:
            assert not is_empty(got) and got != value
            if isinstance(got, str):
                validate_value(vr, got, config.RAISE)
    elif expected == "C":
        if vr == "SQ":  # cleaned: kept, items de-identified, free text emptied
            assert got[0].CodeValue == "MRKSQ"
            assert got[0].TextValue == ""
            assert got[0].ReferencedSOPInstanceUID == map_uid(
                SECRET, "1.2.826.0.1.3680043.10.999.7"
            )
        elif option == MODIFIED and vr in ("DA", "DT"):
            assert got == shifted(value, vr)
        elif option == MODIFIED and vr == "TM":
            assert got == value  # a whole-day shift leaves the time of day
        elif RESOLVED.get(row.basic, row.basic) == "D":
            assert not is_empty(got) and got != value
            if isinstance(got, str):
                validate_value(vr, got, config.RAISE)
        else:
            assert is_empty(got)
    else:
        pytest.fail(f"unexpected action {expected}")


# --- resolution, options, markers -----------------------------------------------------------


def row_named(keyword: str) -> ProfileRow:
    return next(r for r in ROWS if r.keyword == keyword)


@pytest.mark.parametrize(
    ("keyword", "basic", "resolved"),
    [
        ("AcquisitionDate", "X/Z", "Z"),
        ("SeriesDate", "X/D", "D"),
        ("ContentDate", "Z/D", "D"),
        ("InstitutionName", "X/Z/D", "D"),
        ("SourceImageSequence", "X/Z/U*", "U"),
        ("ReferencedImageSequence", "X/Z/U*", "U"),
    ],
)
def test_combined_basic_actions_resolve_to_the_branch_that_always_conforms(
    keyword: str, basic: str, resolved: str
) -> None:
    row = row_named(keyword)
    assert row.basic == basic
    assert action_for(row, frozenset()) == resolved


def test_patient_id_row_is_corrected_to_z_as_in_the_standard() -> None:
    assert row_named("PatientID").basic == "Z"


def test_when_two_options_disagree_the_more_protective_action_wins() -> None:
    row = row_named("DateOfLastCalibration")  # device identity K, modified dates C
    assert action_for(row, frozenset({"retain-device-identity", MODIFIED})) == "C"
    assert action_for(row, frozenset({"retain-device-identity"})) == "K"


def test_unknown_or_conflicting_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown de-identification option"):
        ctx({"retain-everything"})
    with pytest.raises(ValueError, match="exclude each other"):
        ctx({MODIFIED, "retain-longitudinal-full-dates"})
    with pytest.raises(ValueError, match="keep_keywords"):
        ctx(keep_keywords=frozenset({"NotAKeyword"}))


def test_options_map_to_the_table_columns() -> None:
    assert OPTIONS["retain-uids"] == "rtnUIDsOpt"
    assert set(OPTIONS) == {o for r in ROWS for o in r.options}


@pytest.mark.parametrize("dates", [MODIFIED, "retain-longitudinal-full-dates"])
def test_method_codes_are_those_of_cid_7050(dates: str) -> None:
    other_dates = {MODIFIED, "retain-longitudinal-full-dates"} - {dates}
    options = frozenset(OPTIONS) - other_dates
    ds = Dataset()
    mark_deidentified(ds, options)
    assert ds.PatientIdentityRemoved == "YES"
    cid = codes.cid7050
    concepts = [getattr(cid, n) for n in dir(cid) if not n.startswith("_")]
    known = {c.value: c.meaning for c in concepts if hasattr(c, "meaning")}
    assert len(known) == 13  # CID 7050: the profile and its twelve options
    items = ds.DeidentificationMethodCodeSequence
    assert len(items) == 1 + len(options)
    assert items[0].CodeValue == "113100"
    for item in items:
        assert item.CodingSchemeDesignator == "DCM"
        assert known[item.CodeValue] == item.CodeMeaning
    assert list(ds.DeidentificationMethod) == [i.CodeMeaning for i in items]
    assert all(len(v) <= 64 for v in ds.DeidentificationMethod)  # LO


def test_only_the_basic_profile_code_without_options() -> None:
    ds = Dataset()
    mark_deidentified(ds, frozenset())
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.DeidentificationMethod == "Basic Application Confidentiality Profile"


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (set(), "REMOVED"),
        ({MODIFIED}, "MODIFIED"),
        ({"retain-longitudinal-full-dates"}, "UNMODIFIED"),
    ],
)
def test_longitudinal_temporal_information_modified_says_what_happened(
    options: set[str], flag: str
) -> None:
    ds = Dataset()
    ds.StudyDate = "20210315"
    out = deidentify(ds, ctx(options))
    assert out.LongitudinalTemporalInformationModified == flag
    assert out.StudyDate == {"REMOVED": "", "MODIFIED": "20210305", "UNMODIFIED": "20210315"}[flag]


def test_keep_keywords_and_burned_in_annotation_are_left_alone() -> None:
    ds = Dataset()
    ds.ContentDate = "20200101"  # already shifted by the builder
    ds.StudyDate = "20200101"
    ds.BurnedInAnnotation = "YES"
    out = deidentify(ds, ctx({MODIFIED}, keep_keywords=frozenset({"ContentDate"})))
    assert out.ContentDate == "20200101"
    assert out.StudyDate == "20191222"
    assert out.BurnedInAnnotation == "YES"


def test_modified_dates_keep_precision_time_and_offset() -> None:
    ds = Dataset()
    ds.AcquisitionDateTime = "20210301120000.5-0500"
    ds.CalibrationDate = ["20210305", "20210101"]
    ds.StartAcquisitionDateTime = "202103"
    out = deidentify(ds, ctx({MODIFIED}))
    assert out.AcquisitionDateTime == "20210219120000.5-0500"
    assert list(out.CalibrationDate) == ["20210223", "20201222"]
    assert out.StartAcquisitionDateTime == "202102"


def test_uids_are_mapped_consistently_at_every_depth() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.500"
    ref = Dataset()
    ref.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.500"
    ds.SourceImageSequence = Sequence([ref])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = deidentify(ds, ctx())
    new = map_uid(SECRET, "1.2.826.0.1.3680043.10.999.500")
    assert out.SOPInstanceUID == new
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == new
    assert out.SourceImageSequence[0].ReferencedSOPClassUID == SecondaryCaptureImageStorage
    assert out.file_meta.MediaStorageSOPInstanceUID == new
    kept = deidentify(ds, ctx({"retain-uids"}))
    assert kept.SOPInstanceUID == ds.SOPInstanceUID


# --- (b) a careless DICOM photo -------------------------------------------------------------

SAFE_CREATOR = "PHOTO-GATEWAY CONSENT 1"
MARKERS = [
    "ZQXFAMILY",
    "ZQXGIVEN",
    "ZQXPID123",
    "ZQXOTHERPID",
    "19710203",
    "ZQXINSTNAME",
    "ZQXINSTADDR",
    "ZQXREFPHYS",
    "ZQXOPERATOR",
    "ZQXSTATION",
    "ZQXSERIAL",
    "ZQXACCESSION",
    "ZQXSTUDYDESC",
    "ZQXIMGCOMMENT",
    "ZQXPATADDR",
    "ZQXREQPROC",
    "ZQXREQDESC",
    "ZQXCREATOR",
    "ZQXPRIVATE",
    "ZQXOVERLAY",
    "ZQXCURVE",
    "ZQXSERIESDESC",
    "ZQXDEPT",
    "ZQXPERFPHYS",
    "ZQXOCCUPATION",
    "20200817",
    "ZQXCAMERAOWNER",
]
INPUT_UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.999.1001",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.10.999.1002",
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.1003",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.999.1004",
    "ReferencedStudy": "1.2.826.0.1.3680043.10.999.1005",
}


def careless_photo() -> Dataset:
    """A Secondary Capture as a careless device would send it: identity everywhere."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(INPUT_UIDS["SOPInstanceUID"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "ZQXSTATION"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = INPUT_UIDS["SOPInstanceUID"]
    ds.StudyInstanceUID = INPUT_UIDS["StudyInstanceUID"]
    ds.SeriesInstanceUID = INPUT_UIDS["SeriesInstanceUID"]
    ds.FrameOfReferenceUID = INPUT_UIDS["FrameOfReferenceUID"]
    ds.PatientName = "ZQXFAMILY^ZQXGIVEN"
    ds.PatientID = "ZQXPID123"
    ds.OtherPatientIDs = "ZQXOTHERPID"
    ds.PatientBirthDate = "19710203"
    ds.PatientSex = "F"
    ds.PatientAddress = "ZQXPATADDR"
    ds.Occupation = "ZQXOCCUPATION"
    ds.StudyDate = "20200817"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ZQXACCESSION"
    ds.StudyDescription = "ZQXSTUDYDESC"
    ds.SeriesDescription = "ZQXSERIESDESC"
    ds.ReferringPhysicianName = "ZQXREFPHYS"
    ds.PerformingPhysicianName = "ZQXPERFPHYS"
    ds.OperatorsName = "ZQXOPERATOR"
    ds.InstitutionName = "ZQXINSTNAME"
    ds.InstitutionAddress = "ZQXINSTADDR"
    ds.InstitutionalDepartmentName = "ZQXDEPT"
    ds.StationName = "ZQXSTATION"
    ds.DeviceSerialNumber = "ZQXSERIAL"
    ds.CameraOwnerName = "ZQXCAMERAOWNER"
    ds.ImageComments = "ZQXIMGCOMMENT"
    ds.Modality = "XC"
    ds.ConversionType = "DI"
    request = Dataset()
    request.RequestedProcedureID = "ZQXREQPROC"
    request.RequestedProcedureDescription = "ZQXREQDESC"
    ds.RequestAttributesSequence = Sequence([request])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = INPUT_UIDS["ReferencedStudy"]
    ds.ReferencedStudySequence = Sequence([study_ref])
    ds.add_new(0x00110010, "LO", "ZQXCREATOR")  # a private block nobody declared safe
    ds.add_new(0x00111001, "LO", "ZQXPRIVATE")
    ds.add_new(0x00130010, "LO", SAFE_CREATOR)  # our own consent block
    ds.add_new(0x00131001, "LO", "teaching")
    ds.add_new(0x60000010, "US", 8)  # overlay rows, columns, type, origin, bits, data, comment
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60004000, "LT", "ZQXOVERLAY")
    ds.add_new(0x50002500, "LO", "ZQXCURVE")  # curve label (retired group 50xx)
    ds.add_new(0x50003000, "OB", b"ZQXCURVEDATA")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = b"\x80" * 64
    return ds


def written(ds: Dataset) -> bytes:
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)  # pydicom 3's write_like_original=False
    return buf.getvalue()


def output_uids(secret: bytes) -> dict[str, str]:
    """The UIDs of the de-identified careless photo (also run in a subprocess below)."""
    out = deidentify(careless_photo(), ctx(secret=secret))
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    uids = {k: str(out[k].value) for k in keys}
    uids["MediaStorageSOPInstanceUID"] = str(out.file_meta.MediaStorageSOPInstanceUID)
    return uids


def test_careless_photo_leaves_no_identifying_byte() -> None:
    ds = careless_photo()
    before = copy.deepcopy(ds)
    out = deidentify(ds, ctx(safe_private_creators=frozenset({SAFE_CREATOR})))
    assert ds == before
    data = written(out)
    upper = data.upper()
    leaked = [m for m in MARKERS if m.upper().encode() in upper]
    assert leaked == []
    assert [k for k, uid in INPUT_UIDS.items() if uid.encode() in data] == []
    assert PSEUDONYM.encode() in data

    back = dcmread(BytesIO(data))
    assert back.PatientID == back.PatientName == PSEUDONYM
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert not any(0x5000 <= e.tag.group <= 0x60FF for e in back)  # curves and overlays gone
    # the safe creator's block survives, the unknown one does not
    assert back[0x00130010].value == SAFE_CREATOR
    assert back[0x00131001].value == "teaching"
    assert 0x00110010 not in back and 0x00111001 not in back
    assert "113111" in [i.CodeValue for i in back.DeidentificationMethodCodeSequence]
    assert back.ReferencedStudySequence == Sequence()  # X/Z -> Z: empty, Type 2 in the study


def test_same_secret_same_uids_in_separate_processes_other_secret_other_uids() -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_deid as t; "
        "print(json.dumps(t.output_uids(bytes.fromhex(sys.argv[2]))))"
    )

    def run(secret: bytes) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", code, str(HERE), secret.hex()],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    first, second, other = run(SECRET), run(SECRET), run(OTHER_SECRET)
    assert first == second == output_uids(SECRET)
    assert all(first[k] != other[k] for k in first)
    assert first["StudyInstanceUID"] == map_uid(SECRET, INPUT_UIDS["StudyInstanceUID"])
    assert first["MediaStorageSOPInstanceUID"] == first["SOPInstanceUID"]
    assert not set(first.values()) & set(INPUT_UIDS.values())


# --- (c) the marked object validates --------------------------------------------------------


def minimal_secondary_capture() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.826.0.1.3680043.10.999.2003")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.2003"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.2001"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.2002"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "123456"
    ds.PatientBirthDate = "19700131"
    ds.PatientSex = "F"
    ds.StudyDate = "20261120"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.StudyID = "S1"
    ds.AccessionNumber = "A2026-000123"
    ds.Modality = "OT"
    ds.SeriesNumber = "1"
    ds.Laterality = "L"
    ds.ConversionType = "DI"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.ContentDate = "20261120"
    ds.ContentTime = "101500"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = b"\x80" * 64
    return ds


@pytest.mark.parametrize("options", [frozenset(), frozenset({MODIFIED, "clean-descriptors"})])
def test_deidentified_secondary_capture_passes_dciodvfy(
    tmp_path: Path, options: frozenset[str]
) -> None:
    out = deidentify(minimal_secondary_capture(), ctx(options))
    mark_deidentified(out, options)
    path = tmp_path / "sc.dcm"
    dcmwrite(path, out, enforce_file_format=True)
    done = subprocess.run(
        ["/usr/bin/dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    report = done.stderr + done.stdout
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
