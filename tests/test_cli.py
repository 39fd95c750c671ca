"""The command line as a user meets it: conversions that keep the camera's bits, and bad input
that gets one clear line and the right exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_frames

from conftest import run_cli
from dicom_mapping import jpeg
from photo_factory import make_jpeg

META = {
    "patient": {"id": "PID778899", "issuer": "HOSP-MRN", "name": "TESTER^PAULA",
                "birth_date": "1971-02-03", "sex": "F"},
    "accession_number": "ACC55501",
    "body_site": "left forearm",
    "description": "wound day three",
    "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-20"},
}


def _photo(tmp_path: Path, name: str, data: bytes, meta: dict | None = None) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    Path(f"{path}.json").write_text(json.dumps(meta or META))
    return path


def _convert_one(tmp_path: Path, path: Path, env: dict[str, str]) -> pydicom.Dataset:
    out = tmp_path / "out"
    result = run_cli("convert", str(path), "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    (dcm,) = list(out.glob("*.dcm"))
    return pydicom.dcmread(dcm)


def _frame(ds: pydicom.Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def test_upright_jpeg_scan_data_is_stored_byte_for_byte(tmp_path, cli_env):
    data = make_jpeg(width=320, height=240, orientation=1)
    ds = _convert_one(tmp_path, _photo(tmp_path, "a.jpg", data), cli_env)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert jpeg.scan_data(_frame(ds)) == jpeg.scan_data(data)


def _sof_components(frame: bytes) -> int:
    sof = next(s for s in jpeg.segments(frame) if s.marker in (0xC0, 0xC1, 0xC2, 0xC3))
    return frame[sof.offset + 9]


def _app14_transform(frame: bytes) -> int | None:
    for seg in jpeg.segments(frame):
        if seg.marker == 0xEE and frame[seg.offset + 4: seg.offset + 9] == b"Adobe":
            return frame[seg.offset + 15]
    return None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"subsampling": "4:2:0"}, "YBR_FULL_422"),
        ({"subsampling": "4:4:4"}, "YBR_FULL_422"),
        ({"mode": "L"}, "MONOCHROME2"),
        ({"adobe_rgb": True, "subsampling": "4:4:4"}, "RGB"),
    ],
)
def test_photometric_interpretation_follows_the_sof_and_app14(tmp_path, cli_env, kwargs, expected):
    data = make_jpeg(width=128, height=96, orientation=1, **kwargs)
    ds = _convert_one(tmp_path, _photo(tmp_path, "p.jpg", data), cli_env)
    frame = _frame(ds)
    components, transform = _sof_components(frame), _app14_transform(frame)
    # The rule, read from the stored bitstream itself (pydicom corrects silently when decoding).
    if components == 1:
        rule = "MONOCHROME2"
    elif transform == 0:
        rule = "RGB"
    else:
        rule = "YBR_FULL_422"
    assert ds.PhotometricInterpretation == rule == expected


def test_missing_file_exits_2_naming_it(tmp_path, cli_env):
    missing = tmp_path / "nope.jpg"
    result = run_cli("convert", str(missing), "--out", str(tmp_path / "o"), env=cli_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"photo-gateway: {missing}: no such file"]


def test_text_file_named_jpg_exits_2_naming_it(tmp_path, cli_env):
    path = _photo(tmp_path, "notes.jpg", b"this is not a photo, just text\n")
    result = run_cli("convert", str(path), "--out", str(tmp_path / "o"), env=cli_env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line and "not a JPEG" in line and "Traceback" not in result.stderr


def test_truncated_jpeg_exits_2_and_the_good_photo_is_still_converted(tmp_path, cli_env):
    data = make_jpeg(width=200, height=150)
    bad = _photo(tmp_path, "cut.jpg", data[: len(data) // 2])
    good = _photo(tmp_path, "good.jpg", data)
    out = tmp_path / "o"
    result = run_cli("convert", str(bad), str(good), "--out", str(out), env=cli_env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(bad) in line and ("truncated" in line or "EOI" in line)
    assert len(list(out.glob("*.dcm"))) == 1


@pytest.mark.parametrize("address", ["PACS@127.0.0.1", "127.0.0.1:104", "@127.0.0.1:104",
                                     "WAY_TOO_LONG_AE_TITLE_X@127.0.0.1:104", "PACS@127.0.0.1:99999"])
def test_malformed_address_exits_2_naming_it(tmp_path, cli_env, address):
    path = _photo(tmp_path, "a.jpg", make_jpeg(width=64, height=64))
    result = run_cli("send", str(path), "--to", address, env=cli_env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"'{address}'" in line and "Traceback" not in result.stderr


def test_photo_without_consent_is_refused_with_the_reason(tmp_path, cli_env):
    meta = {k: v for k, v in META.items() if k != "consent"}
    path = _photo(tmp_path, "a.jpg", make_jpeg(width=64, height=64), meta)
    result = run_cli("convert", str(path), "--out", str(tmp_path / "o"), env=cli_env)
    assert result.returncode == 2
    assert "consent" in result.stderr and str(path) in result.stderr


def test_unknown_metadata_key_is_an_error_naming_the_key(tmp_path, cli_env):
    path = _photo(tmp_path, "a.jpg", make_jpeg(width=64, height=64), {**META, "favourite": 1})
    result = run_cli("convert", str(path), "--out", str(tmp_path / "o"), env=cli_env)
    assert result.returncode == 2
    assert "unknown key 'favourite'" in result.stderr


def test_no_identifying_input_string_in_the_output_file(tmp_path, cli_env):
    path = _photo(tmp_path, "a.jpg", make_jpeg(width=160, height=120))
    out = tmp_path / "out"
    assert run_cli("convert", str(path), "--out", str(out), env=cli_env).returncode == 0
    raw = next(out.glob("*.dcm")).read_bytes().lower()
    for value in ("PID778899", "TESTER", "PAULA", "19710203", "ACC55501", "wound day three", "HOSP-MRN"):
        assert value.lower().encode() not in raw, value


def test_first_use_without_config_makes_a_private_secret_and_says_so_once(tmp_path):
    import os
    import stat

    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "fresh"))
    env.pop("PHOTO_GATEWAY_CONFIG", None)
    path = _photo(tmp_path, "a.jpg", make_jpeg(width=64, height=64))
    first = run_cli("convert", str(path), "--out", str(tmp_path / "o1"), env=env)
    second = run_cli("convert", str(path), "--out", str(tmp_path / "o2"), env=env)
    assert first.returncode == second.returncode == 0
    assert "pseudonym secret" in first.stderr and second.stderr == ""
    state = tmp_path / "fresh" / "photo-gateway"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "pseudonym.key").stat().st_mode) == 0o600
    # the same secret gives the same object
    assert [p.name for p in (tmp_path / "o1").iterdir()] == [p.name for p in (tmp_path / "o2").iterdir()]
