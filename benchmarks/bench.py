#!/usr/bin/env python
"""Speed and memory of the photo gateway, measured on synthetic photos (see benchmarks/README.md).

    .venv/bin/python benchmarks/bench.py [--quick] [--json] [--profile] [--no-cache]

1. convert_photo per kind of photo: median and p95 time over N runs (5 quick / 20 full) after one
   warm-up run; peak memory of one conversion in a fresh process (tracemalloc peak, and the
   ru_maxrss delta), both also as a multiple of the input size; what the conversion did (pixel
   decodes and encodes, jpegtran runs, JPEG segment walks, dataset encodings), counted by wrapping
   those functions in that process.
2. DCMTK img2dcm on the same JPEG (time of the subprocess), and which metadata markers of the
   input survive in its output and in ours (byte search, as the leak tests do).
3. Into a real Orthanc on loopback: gateway.deliver.store of 100 small objects on one association;
   DCMTK storescu of the same files; `photo-gateway send` of 20 small photos through the CLI;
   delivery without TCP_NODELAY on our socket; ten 12 MP objects.

Inputs are made in-process by tests/photo_factory.py and cached (12 MP PNG and HEIC take ~20 s to
make) under $XDG_CACHE_HOME/photo-gateway-bench/<hash of the factory and the specs>.
Nothing in the product is changed; the instrumentation lives in child processes of this script.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import hashlib
import io
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(TESTS))  # photo_factory

DCMTK = Path("/usr/bin")
SECRET = bytes(range(32))
RECEIVED = dt.datetime(2026, 11, 20, 12, 0, 0)
# Synthetic metadata, same shape as sample_data/*.json: the conversion never sees a real patient.
META: dict[str, Any] = {
    "patient": {
        "id": "BENCH0001",
        "issuer": "BENCH-MRN",
        "name": "BENCH^SYNTHETIC",
        "birth_date": "1980-01-31",
        "sex": "F",
    },
    "accession_number": "BENCHACC01",
    "body_site": "chest",
    "description": "synthetic benchmark photo",
    "consent": {
        "status": "granted",
        "scope": ["clinical-care"],
        "date": "2026-11-18",
        "obtained_by_role": "nurse",
        "identifiable_permitted": False,
    },
    "operator_role": "nurse",
    "recognizable": False,
}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Spec:
    kind: str
    maker: str  # photo_factory function: make_jpeg, make_png, make_heic
    size: tuple[int, int]  # upright width, height
    options: tuple[tuple[str, Any], ...]
    group: str  # generation worker (the two 12 MP skin images are made in parallel)
    what: str

    @property
    def filename(self) -> str:
        return (
            self.kind + {"make_jpeg": ".jpg", "make_png": ".png", "make_heic": ".heic"}[self.maker]
        )


# Phone-like: EXIF (with GPS, a thumbnail and DateTimeOriginal), XMP, IPTC, COM, no JFIF APP0
# (phones write Exif APP1 only). Every metadata field carries a marker of photo_factory.MARKERS.
PHONE = (("jfif", False),)
SPECS: tuple[Spec, ...] = (
    Spec(
        "jpeg-12mp",
        "make_jpeg",
        (4000, 3000),
        PHONE,
        "a",
        "12 MP baseline 4:2:0, EXIF/GPS/thumbnail/XMP/IPTC/COM",
    ),
    Spec(
        "jpeg-12mp-o6",
        "make_jpeg",
        (4000, 3000),
        (*PHONE, ("orientation", 6)),
        "a",
        "same, orientation 6 (MCU-aligned: lossless jpegtran path)",
    ),
    Spec(
        "jpeg-12mp-o6-odd",
        "make_jpeg",
        (4001, 3001),
        (*PHONE, ("orientation", 6)),
        "a",
        "4001x3001, orientation 6 (partial MCU: re-encode path)",
    ),
    Spec(
        "jpeg-12mp-progressive",
        "make_jpeg",
        (4000, 3000),
        (*PHONE, ("progressive", True)),
        "a",
        "12 MP progressive (transcoded to baseline by jpegtran)",
    ),
    Spec("png-12mp", "make_png", (4000, 3000), (), "a", "12 MP RGB PNG, text/eXIf/tIME chunks"),
    Spec("heic-12mp", "make_heic", (4000, 3000), (), "b", "12 MP HEIC (pillow-heif), EXIF/GPS/XMP"),
    Spec("jpeg-200kp", "make_jpeg", (516, 388), PHONE, "a", "200 kP small JPEG, same metadata"),
)
BY_KIND = {s.kind: s for s in SPECS}


def _upright(size: tuple[int, int], cache: dict[tuple[int, int], Any]) -> Any:
    """The upright picture: one 12 MP skin image per worker; other sizes are resized from it (a
    new 4001x3001 skin_image would cost another 3 s and test nothing more)."""
    from photo_factory import skin_image
    from PIL import Image

    if size not in cache:
        if size == (4000, 3000) or size[0] * size[1] < 1_000_000:
            cache[size] = skin_image(*size, seed=1)
        else:
            cache[size] = _upright((4000, 3000), cache).resize(size, Image.Resampling.BICUBIC)
    return cache[size]


def make_input(
    spec: Spec, images: dict[tuple[int, int], Any], size: tuple[int, int] | None = None
) -> bytes:
    import photo_factory

    maker: Callable[..., bytes] = getattr(photo_factory, spec.maker)
    return maker(_upright(size or spec.size, images), **dict(spec.options))


def warmup_size(spec: Spec) -> tuple[int, int]:
    """A small image of the same shape class (odd sizes stay odd, so the same code path runs)."""
    w, h = spec.size
    return (400 + w % 2, 300 + h % 2)


def cache_key() -> str:
    import PIL
    import pillow_heif

    h = hashlib.sha256()
    h.update((TESTS / "photo_factory.py").read_bytes())
    h.update(repr([(s.kind, s.maker, s.size, s.options) for s in SPECS]).encode())
    h.update(
        f"{PIL.__version__} {pillow_heif.__version__} {pillow_heif.libheif_version()}".encode()
    )
    return h.hexdigest()[:16]


def generate_group(group: str, out: Path) -> None:
    """Child process: make every input of one group into `out` (temp name, then rename)."""
    images: dict[tuple[int, int], Any] = {}
    for spec in SPECS:
        if spec.group != group:
            continue
        data = make_input(spec, images)
        tmp = out / (spec.filename + ".tmp")
        tmp.write_bytes(data)
        tmp.rename(out / spec.filename)


def ensure_inputs(no_cache: bool, scratch: Path) -> tuple[Path, float | None]:
    """The directory holding every input; seconds spent generating (None: taken from the cache)."""
    key = cache_key()
    if no_cache:
        where = scratch / "inputs"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        where = base / "photo-gateway-bench" / key
    manifest = where / "manifest.json"
    if manifest.exists() and all((where / s.filename).exists() for s in SPECS):
        return where, None
    where.mkdir(parents=True, exist_ok=True)
    say(f"generating inputs with tests/photo_factory.py into {where} (two workers) ...")
    start = time.perf_counter()
    groups = sorted({s.group for s in SPECS})
    procs = [
        subprocess.Popen([sys.executable, __file__, "--_generate", g, "--_inputs", str(where)])
        for g in groups
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"input generation failed (exit {p.returncode})")
    manifest.write_text(json.dumps({"key": key, "files": [s.filename for s in SPECS]}))
    return where, time.perf_counter() - start


# ------------------------------------------------------------------------------- conversion


def convert_params() -> Any:
    from dicom_mapping.convert import ConvertParams

    return ConvertParams(secret=SECRET, received_at=RECEIVED)


def metadata(**overrides: Any) -> Any:
    from dicom_mapping.metadata import parse_metadata

    return parse_metadata({**META, **overrides})


def encoded(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (with 5 runs, p95 is the slowest run)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM (peak RSS) of this process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class Counters:
    """Wraps the functions that do whole-image work, to count them during one conversion."""

    def __init__(self) -> None:
        import PIL.Image as PILImage
        from pillow_heif import heif

        import dicom_mapping.jpeg as jpeg_mod
        import dicom_mapping.verify as verify_mod

        self.decodes: list[str] = []
        self.encodes: list[str] = []
        self.transposes = 0
        self.jpegtran: list[tuple[str, int]] = []
        self.walks = 0
        self.dcmwrites = 0
        self.enabled = False
        c = self

        get_decoder, get_encoder = PILImage._getdecoder, PILImage._getencoder
        transpose = PILImage.Image.transpose
        heif_load = heif.BaseImage.load
        walk = jpeg_mod._walk
        dcmwrite = vars(verify_mod)["dcmwrite"]  # imported there by name
        run = subprocess.run

        def _getdecoder(mode: str, name: str, *a: Any, **k: Any) -> Any:
            if c.enabled and name != "raw":  # "raw" is a copy of decoded bytes, not a decode
                c.decodes.append(name)
            return get_decoder(mode, name, *a, **k)

        def _getencoder(mode: str, name: str, *a: Any, **k: Any) -> Any:
            if c.enabled and name != "raw":
                c.encodes.append(name)
            return get_encoder(mode, name, *a, **k)

        def _transpose(self: Any, method: Any) -> Any:
            if c.enabled:
                c.transposes += 1
            return transpose(self, method)

        def _heif_load(self: Any) -> None:
            if c.enabled and not self._data:
                c.decodes.append("hevc")
            heif_load(self)

        def _walk(data: bytes) -> Any:
            if c.enabled:
                c.walks += 1
            return walk(data)

        def _dcmwrite(*a: Any, **k: Any) -> Any:
            if c.enabled:
                c.dcmwrites += 1
            return dcmwrite(*a, **k)

        def _run(cmd: Any, *a: Any, **k: Any) -> Any:
            done = run(cmd, *a, **k)
            if (
                c.enabled
                and isinstance(cmd, (list, tuple))
                and os.path.basename(str(cmd[0])) == "jpegtran"
            ):
                c.jpegtran.append((" ".join(str(x) for x in cmd[1:]), done.returncode))
            return done

        PILImage._getdecoder = _getdecoder  # type: ignore[assignment]
        PILImage._getencoder = _getencoder  # type: ignore[assignment]
        PILImage.Image.transpose = _transpose  # type: ignore[method-assign]
        heif.BaseImage.load = _heif_load  # type: ignore[method-assign]
        jpeg_mod._walk = _walk
        vars(verify_mod)["dcmwrite"] = _dcmwrite
        subprocess.run = _run  # type: ignore[assignment]

    def summary(self) -> dict[str, Any]:
        return {
            "pixel_decodes": list(self.decodes),
            "pixel_encodes": list(self.encodes),
            "transposes": self.transposes,
            "jpegtran_runs": [{"args": a, "exit": rc} for a, rc in self.jpegtran],
            "jpeg_walks": self.walks,
            "verify_dcmwrites": self.dcmwrites,
        }


def memory_child(kind: str, inputs: Path) -> dict[str, Any]:
    """Child process: one conversion of `kind` after a warm-up on a small photo of the same kind.

    ru_maxrss is a high-water mark that a child inherits from its parent at exec, so this runs in
    a process started while the parent is still small, and reports the rise over its own peak
    after the warm-up. VmHWM (reset through clear_refs) is the same peak measured a second way.
    """
    from dicom_mapping.convert import convert_photo

    spec = BY_KIND[kind]
    data = (inputs / spec.filename).read_bytes()
    meta, params = metadata(), convert_params()
    convert_photo(make_input(spec, {}, warmup_size(spec)), meta, params)  # imports, tables, codecs
    counters = Counters()
    gc.collect()

    rss_before = _status("VmRSS")
    reset = _reset_peak_rss()
    maxrss_before = _maxrss()
    counters.enabled = True
    out = convert_photo(data, meta, params)
    counters.enabled = False
    maxrss_after = _maxrss()
    hwm = _status("VmHWM") if reset else None
    notes = list(out.notes)
    out_bytes = len(encoded(out.dataset))
    del out
    gc.collect()

    tracemalloc.start()
    convert_photo(data, meta, params)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "kind": kind,
        "input_bytes": len(data),
        "output_bytes": out_bytes,
        "tracemalloc_peak": traced_peak,
        "maxrss_delta": maxrss_after - maxrss_before,
        "hwm_delta": (hwm - rss_before) if hwm is not None and rss_before is not None else None,
        "counts": counters.summary(),
        "notes": notes,
    }


def memory_all(inputs: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for spec in SPECS:
        say(f"memory: {spec.kind} (fresh process)")
        done = subprocess.run(
            [sys.executable, __file__, "--_memory-child", spec.kind, "--_inputs", str(inputs)],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise SystemExit(f"memory child {spec.kind} failed:\n{done.stderr}")
        results[spec.kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def time_conversions(inputs: Path, runs: int) -> dict[str, dict[str, Any]]:
    from dicom_mapping.convert import convert_photo

    meta, params = metadata(), convert_params()
    results = {}
    for spec in SPECS:
        data = (inputs / spec.filename).read_bytes()
        say(f"convert_photo: {spec.kind} x{runs}")
        out = convert_photo(data, meta, params)  # warm-up (also the output we describe)
        ds = out.dataset
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            convert_photo(data, meta, params)
            times.append(time.perf_counter() - start)
        results[spec.kind] = {
            "runs": runs,
            "median_ms": statistics.median(times) * 1e3,
            "p95_ms": percentile(times, 95) * 1e3,
            "min_ms": min(times) * 1e3,
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        }
    return results


def profile_conversions(inputs: Path) -> str:
    import cProfile
    import pstats

    from dicom_mapping.convert import convert_photo

    meta, params = metadata(), convert_params()
    text = io.StringIO()
    for spec in SPECS:
        if spec.kind == "jpeg-200kp":
            continue
        data = (inputs / spec.filename).read_bytes()
        convert_photo(data, meta, params)
        prof = cProfile.Profile()
        prof.enable()
        convert_photo(data, meta, params)
        prof.disable()
        text.write(f"\n--- cProfile, one convert_photo of {spec.kind} (top 10 by own time) ---\n")
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("tottime").print_stats(10)
    return _trim_profile(text.getvalue())


def _trim_profile(text: str) -> str:
    keep = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("Ordered by", "List reduced")):
            continue
        keep.append(line.replace(str(REPO) + "/", "").replace(sys.prefix + "/", ""))
    return "\n".join(keep)


# ------------------------------------------------------------------------------------- img2dcm


def img2dcm(inputs: Path, scratch: Path, runs: int, ours_ms: dict[str, float]) -> dict[str, Any]:
    """DCMTK's converter on the same JPEGs: time, and what of the input's metadata it keeps."""
    import pydicom
    from photo_factory import binary_markers_present, fields_present, jpeg_segments
    from pydicom.encaps import generate_frames

    from dicom_mapping.convert import convert_photo

    tool = DCMTK / "img2dcm"
    if not tool.exists():
        return {"skipped": f"{tool} not found"}
    start = time.perf_counter()
    subprocess.run([str(tool), "--version"], capture_output=True, check=True)
    process_ms = (time.perf_counter() - start) * 1e3

    def frame_markers(dcm: bytes) -> list[str]:
        ds = pydicom.dcmread(io.BytesIO(dcm))
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        names = {
            0xE0: "APP0",
            0xE1: "APP1",
            0xE2: "APP2",
            0xED: "APP13",
            0xEE: "APP14",
            0xFE: "COM",
        }
        return sorted({names[m] for m, _ in jpeg_segments(frame) if m in names})

    def found(dcm: bytes) -> list[str]:
        return [*fields_present(dcm), *binary_markers_present(dcm)]

    rows = {}
    meta, params = metadata(), convert_params()
    for kind in ("jpeg-12mp", "jpeg-200kp", "jpeg-12mp-o6"):
        src = inputs / BY_KIND[kind].filename
        out = scratch / f"img2dcm-{kind}.dcm"
        times = []
        for i in range(runs + 1):
            start = time.perf_counter()
            subprocess.run(
                [str(tool), "-i", "JPEG", str(src), str(out)], capture_output=True, check=True
            )
            if i:  # the first run warms the page cache
                times.append(time.perf_counter() - start)
        theirs = out.read_bytes()
        ours = encoded(convert_photo(src.read_bytes(), meta, params).dataset)
        ds_theirs = pydicom.dcmread(io.BytesIO(theirs), stop_before_pixels=True)
        ds_ours = pydicom.dcmread(io.BytesIO(ours), stop_before_pixels=True)
        rows[kind] = {
            "img2dcm_median_ms": statistics.median(times) * 1e3,
            "img2dcm_p95_ms": percentile(times, 95) * 1e3,
            "convert_photo_median_ms": ours_ms.get(kind),
            "img2dcm_markers": found(theirs),
            "img2dcm_frame_segments": frame_markers(theirs),
            "ours_markers": found(ours),
            "ours_frame_segments": frame_markers(ours),
            "img2dcm_size": f"{ds_theirs.Columns}x{ds_theirs.Rows}",
            "ours_size": f"{ds_ours.Columns}x{ds_ours.Rows}",
            "img2dcm_photometric": str(ds_theirs.PhotometricInterpretation),
            "ours_photometric": str(ds_ours.PhotometricInterpretation),
        }
    return {"process_start_ms": process_ms, "runs": runs, "inputs": rows}


# ------------------------------------------------------------------------------------- network


def small_photos(count: int, first: int) -> list[bytes]:
    """Distinct 200 kP JPEGs (one picture; DateTimeOriginal differs, so the input hash and the
    SOP Instance UID differ)."""
    from photo_factory import make_jpeg, skin_image

    base = skin_image(516, 388, seed=7)
    out = []
    for i in range(first, first + count):
        stamp = f"2026:11:20 {10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        out.append(make_jpeg(base, jfif=False, date_time_original=stamp))
    return out


def _clear(pacs: Any) -> None:
    for patient in pacs.get("/patients"):
        pacs.request("DELETE", f"/patients/{patient}")
    if pacs.instance_count():
        raise RuntimeError("Orthanc still holds instances after DELETE /patients/*")


def network(scratch: Path, reps: int, quick: bool, inputs: Path) -> dict[str, Any]:
    from dicom_mapping.convert import convert_photo
    from gateway import deliver
    from gateway import network as net
    from gateway.orthanc import EmbeddedOrthanc
    from gateway.settings import write_key_file

    if not shutil.which("Orthanc") and not Path("/usr/sbin/Orthanc").exists():
        return {"skipped": "Orthanc not installed"}
    meta, params = metadata(), convert_params()
    n_small = 100
    n_nodelay_off = 20 if quick else 100
    n_big = 5 if quick else 10
    n_cli = 20

    say("network: converting the small photos")
    photos = small_photos(n_small + n_cli + 1, first=0)
    datasets = [convert_photo(p, meta, params).dataset for p in photos[:n_small]]
    if len({str(d.SOPInstanceUID) for d in datasets}) != n_small:
        raise RuntimeError("small photos did not give distinct SOP Instance UIDs")
    files_dir = scratch / "small-dcm"
    files_dir.mkdir()
    files = []
    for i, ds in enumerate(datasets):
        path = files_dir / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    big = convert_photo((inputs / BY_KIND["jpeg-12mp"].filename).read_bytes(), meta, params).dataset
    from pydicom.uid import generate_uid

    bigs = []
    for _ in range(n_big):  # same pixels, new instance UIDs: Orthanc keeps the first of a duplicate
        clone = copy.deepcopy(big)
        clone.SOPInstanceUID = clone.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        bigs.append(clone)

    cli_dir = scratch / "cli"
    cli_dir.mkdir()
    cli_files = []
    for i, data in enumerate(photos[n_small:]):
        path = cli_dir / f"photo{i:02d}.jpg"
        path.write_bytes(data)
        cli_files.append(str(path))
    meta_file = cli_dir / "meta.json"
    meta_file.write_text(json.dumps(META))
    state = scratch / "xdg" / "photo-gateway"
    state.mkdir(parents=True, mode=0o700)
    write_key_file(state / "pseudonym.key")  # so the CLI's first-use notice stays out of the way
    cli_env = dict(os.environ, XDG_DATA_HOME=str(scratch / "xdg"))
    cli_env.pop("PHOTO_GATEWAY_CONFIG", None)
    exe = Path(sys.executable).with_name("photo-gateway")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]

    pacs = EmbeddedOrthanc(scratch / "orthanc", ae_title="ORTHANC")
    say("network: starting Orthanc")
    pacs.start()
    results: dict[str, Any] = {"orthanc": pacs.get("/system").get("Version"), "rows": []}
    try:

        def row(name: str, objects: int, seconds: list[float], note: str = "") -> None:
            total = statistics.median(seconds)
            results["rows"].append(
                {
                    "test": name,
                    "objects": objects,
                    "reps": len(seconds),
                    "total_s": total,
                    "per_object_ms": total / objects * 1e3,
                    "all_totals_s": seconds,
                    "note": note,
                }
            )

        def timed_store(objs: list[Any]) -> float:
            _clear(pacs)
            start = time.perf_counter()
            outcomes = deliver.store(objs, pacs.address, "BENCH", timeout=60)
            took = time.perf_counter() - start
            bad = [o for o in outcomes if not o.ok]
            if bad or pacs.instance_count() != len(objs):
                raise RuntimeError(
                    f"store: {len(bad)} failed ({bad[:1]}), {pacs.instance_count()} in Orthanc"
                )
            return took

        def timed_storescu(paths: list[str], nodelay: bool) -> float:
            _clear(pacs)
            env = dict(os.environ)
            env.pop("TCP_NODELAY", None)
            if nodelay:
                env["TCP_NODELAY"] = "1"
            cmd = [
                str(DCMTK / "storescu"),
                "-aet",
                "BENCH",
                "-aec",
                pacs.ae_title,
                "-R",
                "-xy",
                "127.0.0.1",
                str(pacs.dicom_port),
                *paths,
            ]
            start = time.perf_counter()
            done = subprocess.run(
                cmd, check=False, capture_output=True, text=True, env=env, timeout=600
            )
            took = time.perf_counter() - start
            if done.returncode != 0 or pacs.instance_count() != len(paths):
                raise RuntimeError(f"storescu exit {done.returncode}: {done.stderr[-500:]}")
            return took

        def timed_cli(paths: list[str]) -> float:
            _clear(pacs)
            cmd = [*cli, "send", *paths, "--meta", str(meta_file), "--to", str(pacs.address)]
            start = time.perf_counter()
            done = subprocess.run(
                cmd, check=False, capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=600
            )
            took = time.perf_counter() - start
            if done.returncode != 0 or pacs.instance_count() != len(paths):
                raise RuntimeError(
                    f"photo-gateway send exit {done.returncode}: {done.stderr[-800:]}"
                )
            return took

        say(f"network: (a) deliver.store {n_small} small objects x{reps}")
        row(
            "(a) deliver.store, one association",
            n_small,
            [timed_store(datasets) for _ in range(reps)],
            "TCP_NODELAY on our socket and Orthanc's",
        )
        if (DCMTK / "storescu").exists():
            say(f"network: (b) storescu {n_small} files x{reps}")
            row(
                "(b) storescu -R -xy, TCP_NODELAY=1",
                n_small,
                [timed_storescu(files, True) for _ in range(reps)],
                "DCMTK, one process, one association",
            )
            row(
                "(b) storescu -R -xy, no TCP_NODELAY",
                n_nodelay_off,
                [timed_storescu(files[:n_nodelay_off], False) for _ in range(reps)],
                "DCMTK's default (Nagle on its side)",
            )
        say(f"network: (c) photo-gateway send x{reps}")
        startup = []
        for _ in range(reps):
            start = time.perf_counter()
            subprocess.run([*cli, "--help"], capture_output=True, env=cli_env, cwd=REPO, check=True)
            startup.append(time.perf_counter() - start)
        one = [timed_cli(cli_files[:1]) for _ in range(reps)]
        many = [timed_cli(cli_files[1 : 1 + n_cli]) for _ in range(reps)]
        row("(c) photo-gateway --help (start-up)", 1, startup, "interpreter + imports")
        row("(c) photo-gateway send, 1 photo", 1, one, "stage, convert, store, purge")
        row(
            f"(c) photo-gateway send, {n_cli} photos",
            n_cli,
            many,
            f"marginal {(statistics.median(many) - statistics.median(one)) / (n_cli - 1) * 1e3:.1f} ms/photo",
        )
        say(f"network: (d) deliver.store without NODELAY_HANDLERS, {n_nodelay_off} objects x{reps}")
        saved = list(net.NODELAY_HANDLERS)
        try:
            net.NODELAY_HANDLERS.clear()  # deliver holds the same list object
            off = [timed_store(datasets[:n_nodelay_off]) for _ in range(reps)]
        finally:
            net.NODELAY_HANDLERS[:] = saved
        row(
            "(d) deliver.store, no NODELAY on our side",
            n_nodelay_off,
            off,
            "Orthanc still has TCP_NODELAY=1",
        )
        say(f"network: (e) deliver.store {n_big} x 12 MP objects x{reps}")
        row(
            f"(e) deliver.store, 12 MP objects ({len(encoded(big)) / 1e6:.2f} MB)",
            n_big,
            [timed_store(bigs) for _ in range(reps)],
            "one association",
        )
    finally:
        pacs.stop()
    return results


def profile_send(scratch: Path) -> str:
    """cProfile of `python -m gateway send` of 20 small photos into a fresh Orthanc (own time)."""
    from gateway.orthanc import EmbeddedOrthanc
    from gateway.settings import write_key_file

    work = scratch / "profile-send"
    work.mkdir()
    paths = []
    for i, data in enumerate(small_photos(20, first=500)):
        path = work / f"p{i:02d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    (work / "meta.json").write_text(json.dumps(META))
    state = work / "xdg" / "photo-gateway"
    state.mkdir(parents=True, mode=0o700)
    write_key_file(state / "pseudonym.key")
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg"))
    env.pop("PHOTO_GATEWAY_CONFIG", None)
    with EmbeddedOrthanc(work / "orthanc") as pacs:
        out = work / "send.prof"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(out),
                "-m",
                "gateway",
                "send",
                *paths,
                "--meta",
                str(work / "meta.json"),
                "--to",
                str(pacs.address),
            ],
            capture_output=True,
            env=env,
            cwd=REPO,
            check=True,
            timeout=300,
        )
    import pstats

    text = io.StringIO()
    text.write("\n--- cProfile, photo-gateway send of 20 small photos (top 15 by own time) ---\n")
    pstats.Stats(str(out), stream=text).sort_stats("tottime").print_stats(15)
    return _trim_profile(text.getvalue())


# ----------------------------------------------------------------------------------- reporting


def environment() -> dict[str, Any]:
    import numpy
    import PIL
    import pillow_heif
    import pydicom
    import pynetdicom

    def first_line(cmd: list[str]) -> str | None:
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0].strip() if text else None

    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "pillow": PIL.__version__,
        "pillow_heif": pillow_heif.__version__,
        "libheif": pillow_heif.libheif_version(),
        "numpy": numpy.__version__,
        "dcmtk": first_line([str(DCMTK / "img2dcm"), "--version"]),
        "jpegtran": first_line(["jpegtran", "-version"]),
    }


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _path(counts: dict[str, Any]) -> str:
    parts = []
    for run in counts["jpegtran_runs"]:
        args = run["args"].split()
        if "-perfect" in args:
            op = " ".join(a for a in args if a not in ("-perfect", "-copy", "none"))
            parts.append(f"jpegtran -perfect {op}" + (" refused" if run["exit"] else ""))
        else:
            parts.append("jpegtran transcode" + (" failed" if run["exit"] else ""))
    decodes, encodes = counts["pixel_decodes"], counts["pixel_encodes"]
    if decodes:
        parts.append("decode " + "+".join(decodes))
    if counts["transposes"]:
        parts.append(f"transpose x{counts['transposes']}")
    if encodes:
        parts.append("encode " + "+".join(encodes))
    return ", ".join(parts) or "pass-through"


def render(report: dict[str, Any]) -> str:
    env, out = report["environment"], []
    out.append(
        f"photo-gateway benchmark, {env['date']}, commit {env['commit']}, mode {report['mode']}"
    )
    out.append(f"machine: {env['cpus']} CPUs ({env['cpu_model']}), {env['platform']}")
    out.append(
        f"Python {env['python']}, pydicom {env['pydicom']}, pynetdicom {env['pynetdicom']}, "
        f"Pillow {env['pillow']}, pillow-heif {env['pillow_heif']} (libheif {env['libheif']}), "
        f"numpy {env['numpy']}"
    )
    out.append(
        f"{env['dcmtk']}; jpegtran: {env['jpegtran']}; Orthanc "
        f"{report.get('network', {}).get('orthanc', '-')}"
    )
    gen = report["inputs"]["generated_s"]
    out.append(
        "inputs: tests/photo_factory.py, "
        + (f"generated in {gen:.1f} s" if gen else "from the cache")
        + f" ({report['inputs']['dir']})"
    )

    conv, mem = report["convert"], report["memory"]
    out.append("")
    out.append(
        f"1. convert_photo (Secondary Capture, JPEG quality 95), {report['runs']} runs after a warm-up; "
        "memory: one conversion in a fresh process"
    )
    rows = []
    for spec in SPECS:
        c, m = conv[spec.kind], mem[spec.kind]
        inp = m["input_bytes"]
        counts = m["counts"]
        rows.append(
            [
                spec.kind,
                _size(inp),
                _size(m["output_bytes"]),
                f"{c['median_ms']:.1f}",
                f"{c['p95_ms']:.1f}",
                f"{_mb(m['tracemalloc_peak'])} ({m['tracemalloc_peak'] / inp:.1f}x)",
                f"{_mb(m['maxrss_delta'])} ({m['maxrss_delta'] / inp:.1f}x)",
                f"{counts['jpeg_walks']}/{counts['verify_dcmwrites']}",
                _path(counts),
            ]
        )
    out.append(
        _table(
            [
                "kind",
                "input",
                "output",
                "median ms",
                "p95 ms",
                "tracemalloc peak MB (x in)",
                "maxrss delta MB (x in)",
                "walks/dcmwrite",
                "what ran",
            ],
            rows,
            right={1, 2, 3, 4, 5, 6, 7},
        )
    )
    out.append(
        "  walks = JPEG segment walks of a whole bitstream; dcmwrite = dataset encodings by the last "
        "check."
    )
    out.append(
        "  tracemalloc sees Python objects (bytes, numpy); not Pillow's or libheif's pixel buffers, "
        "which ru_maxrss does."
    )

    im = report["img2dcm"]
    out.append("")
    if "skipped" in im:
        out.append(f"2. img2dcm: skipped ({im['skipped']})")
    else:
        out.append(
            f"2. DCMTK img2dcm -i JPEG (subprocess; process start alone {im['process_start_ms']:.1f} ms), "
            f"{im['runs']} runs"
        )
        rows = []
        for kind, r in im["inputs"].items():
            ours = r["convert_photo_median_ms"]
            rows.append(
                [
                    kind,
                    f"{r['img2dcm_median_ms']:.1f}",
                    f"{r['img2dcm_p95_ms']:.1f}",
                    "-" if ours is None else f"{ours:.1f}",
                    ",".join(r["img2dcm_frame_segments"]) or "-",
                    ",".join(r["img2dcm_markers"]) or "none",
                    ",".join(r["ours_markers"]) or "none",
                    f"{r['img2dcm_size']} / {r['ours_size']}",
                ]
            )
        out.append(
            _table(
                [
                    "input",
                    "img2dcm median ms",
                    "p95 ms",
                    "convert_photo median ms",
                    "img2dcm frame keeps",
                    "input markers in img2dcm output",
                    "in ours",
                    "cols x rows img2dcm / ours",
                ],
                rows,
                right={1, 2, 3},
            )
        )

    nw = report.get("network", {})
    out.append("")
    if "skipped" in nw:
        out.append(f"3. network: skipped ({nw['skipped']})")
    elif nw:
        out.append(
            f"3. into Orthanc {nw['orthanc']} on loopback (median of {report['reps']} reps; "
            "Orthanc emptied before each)"
        )
        rows = [
            [
                r["test"],
                str(r["objects"]),
                f"{r['total_s']:.3f}",
                f"{max(r['all_totals_s']):.3f}",
                f"{r['per_object_ms']:.1f}",
                r["note"],
            ]
            for r in nw["rows"]
        ]
        out.append(
            _table(
                ["test", "objects", "total s", "max s", "per object ms", "note"],
                rows,
                right={1, 2, 3, 4},
            )
        )
    out.append("")
    out.append(f"wall time of this run: {report['wall_s']:.0f} s")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=5 runs, 1 rep (under ~60 s)")
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print cProfile summaries of each 12 MP conversion and of the CLI send",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="generate the inputs anew into a temp dir"
    )
    parser.add_argument("--no-network", action="store_true", help="skip the Orthanc part")
    parser.add_argument("--_generate", help=argparse.SUPPRESS)
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    parser.add_argument("--_inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._generate:
        generate_group(args._generate, Path(args._inputs))
        return
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, Path(args._inputs))))
        return

    began = time.perf_counter()
    runs, reps = (5, 1) if args.quick else (20, 3)
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "runs": runs,
        "reps": reps,
        "environment": environment(),
    }
    with tempfile.TemporaryDirectory(prefix="photo-gateway-bench-") as tmp:
        scratch = Path(tmp)
        inputs, generated = ensure_inputs(args.no_cache, scratch)
        report["inputs"] = {
            "dir": str(inputs),
            "generated_s": generated,
            "files": {
                s.kind: {
                    "file": s.filename,
                    "what": s.what,
                    "bytes": (inputs / s.filename).stat().st_size,
                }
                for s in SPECS
            },
        }
        # Memory first, while this process is small: a child inherits the parent's peak RSS.
        report["memory"] = memory_all(inputs)
        report["convert"] = time_conversions(inputs, runs)
        report["img2dcm"] = img2dcm(
            inputs, scratch, runs, {k: v["median_ms"] for k, v in report["convert"].items()}
        )
        if not args.no_network:
            report["network"] = network(scratch, reps, args.quick, inputs)
        profiles = ""
        if args.profile:
            say("profiling")
            profiles = profile_conversions(inputs)
            if not args.no_network:
                profiles += "\n" + profile_send(scratch)
            report["profiles"] = profiles
    report["wall_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
        if profiles:
            print(profiles)


if __name__ == "__main__":
    main()
