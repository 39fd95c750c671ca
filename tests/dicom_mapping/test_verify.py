"""The last check: a leak stops the object; chance matches against keyed UIDs do not."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_mapping import verify
from dicom_mapping.convert import ConvertParams, convert_photo
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import parse_metadata
from photo_factory import make_jpeg

PHOTO = make_jpeg(width=64, height=48, orientation=1)
META = parse_metadata({
    "patient": {"id": "4711", "issuer": "HOSP", "name": "LEAK^CHECK", "birth_date": "1980-05-06"},
    "accession_number": "ACC9", "description": "left of the old scar",
    "consent": {"status": "granted", "scope": ["clinical-care"]},
})


def _object() -> Dataset:
    params = ConvertParams(secret=b"v" * 32, received_at=dt.datetime(2026, 11, 20, 9, 0))
    return convert_photo(PHOTO, META, params).dataset


def _ids() -> verify.Identifiers:
    ids = verify.Identifiers()
    ids.add("patient ID", "4711")
    ids.add_name("patient name", "LEAK^CHECK")
    ids.add_date("birth date", dt.date(1980, 5, 6))
    return ids


@pytest.mark.parametrize(
    ("keyword", "value", "kind"),
    [("ImageComments", "seen by check on ward", "patient name"),
     ("OperatorsName", "Leak^Someone", "patient name"),
     ("StationName", "06/05/1980", "birth date"),
     ("InstitutionName", "unit 4711", "patient ID")],
)
def test_an_identifying_string_anywhere_stops_the_object(keyword, value, kind):
    ds = _object()
    setattr(ds, keyword, value)
    with pytest.raises(InputError, match=kind) as err:
        verify.check(ds, _ids())
    assert value.lower() not in str(err.value).lower()  # the reason names the class, never the value


def test_a_leak_nested_in_a_sequence_is_found():
    ds = _object()
    item = Dataset()
    item.PatientComments = "Check"
    ds.RequestAttributesSequence = Sequence([item])
    with pytest.raises(InputError):
        verify.check(ds, _ids())


def test_an_input_uid_left_in_the_object_is_found():
    ds = _object()
    ids = _ids()
    ids.uids.add("1.2.826.0.1.999.123")
    ds.ReferencedSOPInstanceUID = "1.2.826.0.1.999.123"
    with pytest.raises(InputError, match="UID"):
        verify.check(ds, ids)


def test_a_short_numeric_id_never_matches_the_keyed_uid_digits_by_chance():
    """4-digit IDs would match 2.25 UID digits in ~1 % of objects if UIDs were searched."""
    meta = META
    for n in range(200):
        params = ConvertParams(secret=n.to_bytes(32, "big"), received_at=dt.datetime(2026, 11, 20, 9, 0))
        convert_photo(PHOTO, meta, params)  # raises if the check misfires


def test_a_foreign_jpeg_segment_in_the_frame_is_refused():
    from pydicom.encaps import encapsulate

    ds = _object()
    frame = PHOTO[:2] + b"\xff\xfe\x00\x06note" + PHOTO[2:]
    ds.PixelData = encapsulate([frame])
    with pytest.raises(InputError, match="0xFFFE"):
        verify.check(ds, verify.Identifiers())
