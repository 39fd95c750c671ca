"""The builders: every coded site, both IODs, with and without a side, pass dciodvfy."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from conftest import dciodvfy_errors
from dicom_mapping import bodysite, jpeg
from dicom_mapping.convert import ConvertParams, convert_photo
from dicom_mapping.metadata import parse_metadata
from photo_factory import make_jpeg

SITES = [None, *sorted(bodysite.BODY_SITES)]
PHOTO = make_jpeg(width=96, height=64, orientation=1)


def _meta(site: str | None, laterality: str | None = None) -> dict:
    meta: dict = {
        "patient": {"id": "W123456", "issuer": "HOSP", "name": "WRAP^TEST"},
        "consent": {"status": "granted", "scope": ["clinical-care"]},
    }
    if site:
        meta["body_site"] = site
    if laterality:
        meta["laterality"] = laterality
    return meta


@pytest.mark.parametrize("iod", ["sc", "vl-photo"])
@pytest.mark.parametrize("site", SITES)
def test_every_coded_site_builds_a_valid_object(tmp_path, iod, site):
    params = ConvertParams(secret=b"s" * 32, received_at=dt.datetime(2026, 11, 20, 9, 0), iod=iod)
    out = convert_photo(PHOTO, parse_metadata(_meta(site)), params).dataset
    path = tmp_path / "o.dcm"
    out.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    if site:
        concept, side = bodysite.lookup(site)
        assert out.AnatomicRegionSequence[0].CodeValue == concept.code
        assert out.AnatomicRegionSequence[0].CodingSchemeDesignator == "SCT"
        expected = side or (None if concept.paired else "U")
        assert out.get("ImageLaterality") == expected
        assert ("Laterality" in out) == (expected is None)


def test_a_paired_site_of_unknown_side_leaves_laterality_empty(tmp_path):
    params = ConvertParams(secret=b"s" * 32, received_at=dt.datetime(2026, 11, 20, 9, 0))
    out = convert_photo(PHOTO, parse_metadata(_meta("forearm")), params).dataset
    assert out.Laterality == "" and "ImageLaterality" not in out


def test_sop_class_modality_and_conversion_type_follow_the_iod():
    params = ConvertParams(secret=b"s" * 32, received_at=dt.datetime(2026, 11, 20, 9, 0))
    sc = convert_photo(PHOTO, parse_metadata(_meta("abdomen")), params).dataset
    vl = convert_photo(PHOTO, parse_metadata(_meta("abdomen")),
                       ConvertParams(secret=b"s" * 32, received_at=params.received_at, iod="vl-photo")).dataset
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.ConversionType == "DI"
    assert vl.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4" and vl.Modality == "XC"
    assert "ConversionType" not in vl
    assert sc.SOPInstanceUID != vl.SOPInstanceUID
    assert sc.StudyInstanceUID == vl.StudyInstanceUID


def test_the_same_photo_and_secret_give_the_same_uids_and_another_secret_others():
    when = dt.datetime(2026, 11, 20, 9, 0)
    meta = parse_metadata(_meta("chest"))
    a = convert_photo(PHOTO, meta, ConvertParams(secret=b"a" * 32, received_at=when)).dataset
    a2 = convert_photo(PHOTO, meta, ConvertParams(secret=b"a" * 32, received_at=when)).dataset
    b = convert_photo(PHOTO, meta, ConvertParams(secret=b"b" * 32, received_at=when)).dataset
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[kw].value == a2[kw].value
        assert a[kw].value != b[kw].value
    assert hashlib.sha256(jpeg.scan_data(PHOTO)).digest()  # the photo itself is a real JPEG
