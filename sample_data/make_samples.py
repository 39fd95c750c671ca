"""Regenerate the synthetic sample photos and their sidecars in sample_data/.

    .venv/bin/python sample_data/make_samples.py [--out DIR]

Deterministic: fixed seeds, no clock, no randomness outside photo_factory's seeded generators;
the same library versions give the same bytes. Everything written is synthetic: the pictures are
drawn by tests/photo_factory.py and the patients are invented.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import photo_factory as pf


@dataclass(frozen=True)
class Sample:
    name: str
    build: Callable[[], bytes]
    sidecar: dict[str, Any]


def _sidecar(
    n: int,
    *,
    name: str,
    birth_date: str,
    sex: str,
    body_site: str,
    laterality: str | None,
    description: str,
    scope: list[str],
    date: str,
    role: str = "nurse",
    recognizable: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "patient": {
            "id": f"SYN{n:04d}",
            "issuer": "SYNTH-MRN",
            "name": name,
            "birth_date": birth_date,
            "sex": sex,
        },
        "accession_number": f"SYNACC{n:04d}",
        "body_site": body_site,
    }
    if laterality is not None:  # midline sites (abdomen, chest) have none
        meta["laterality"] = laterality
    meta["description"] = description
    meta["consent"] = {
        "status": "granted",
        "scope": scope,
        "date": date,
        "obtained_by_role": role,
        "identifiable_permitted": False,
    }
    meta["operator_role"] = role
    meta["recognizable"] = recognizable
    return meta


SAMPLES: tuple[Sample, ...] = (
    Sample(
        # Phone held upright: 1200x1600 scene stored as 1600x1200 pixels tagged Orientation 6,
        # EXIF first and no JFIF APP0, as phones write. 1600 and 1200 are multiples of the
        # 16-pixel 4:2:0 MCU, so the rotation can be lossless (jpegtran -perfect).
        "wound_phone_orient6.jpg",
        lambda: pf.make_jpeg(
            pf.skin_image(1200, 1600, seed=101),
            quality=85,
            subsampling="4:2:0",
            orientation=6,
            jfif=False,
            date_time_original="2026:11:20 10:31:02",
        ),
        _sidecar(
            1,
            name="TEST^SAMPLE ONE",
            birth_date="1970-01-31",
            sex="F",
            body_site="left forearm",
            laterality="L",
            description="SYNTHETIC wound, day 3",
            scope=["clinical-care", "teaching"],
            date="2026-11-20",
        ),
    ),
    Sample(
        "rash_444.jpg",
        lambda: pf.make_jpeg(
            pf.skin_image(1024, 768, seed=102, ruler=False),
            quality=90,
            subsampling="4:4:4",
            date_time_original="2026:11:18 09:12:45",
        ),
        _sidecar(
            2,
            name="TEST^SAMPLE TWO",
            birth_date="1984-06-15",
            sex="M",
            body_site="chest",
            laterality=None,
            description="SYNTHETIC rash, 2 days",
            scope=["clinical-care"],
            date="2026-11-18",
            role="physician",
        ),
    ),
    Sample(
        "ulcer_gray.jpg",
        lambda: pf.make_jpeg(
            pf.skin_image(1024, 768, seed=103),
            mode="L",
            quality=88,
            date_time_original="2026:11:19 14:05:10",
        ),
        _sidecar(
            3,
            name="TEST^SAMPLE THREE",
            birth_date="1948-03-02",
            sex="F",
            body_site="left lower leg",
            laterality="L",
            description="SYNTHETIC venous ulcer, weekly review",
            scope=["clinical-care", "second-opinion"],
            date="2026-11-19",
        ),
    ),
    Sample(
        "burn.png",
        lambda: pf.make_png(
            pf.skin_image(800, 600, seed=104),
            mode="RGB",
            date_time_original="2026:11:21 16:40:33",
        ),
        _sidecar(
            4,
            name="TEST^SAMPLE FOUR",
            birth_date="1992-11-08",
            sex="M",
            body_site="right hand",
            laterality="R",
            description="SYNTHETIC partial-thickness burn",
            scope=["clinical-care", "research"],
            date="2026-11-21",
            recognizable=True,
        ),
    ),
    Sample(
        # APP14 Adobe transform 0: R, G, B components, no YCbCr, no JFIF (4:4:4).
        "lesion_adobe_rgb.jpg",
        lambda: pf.make_jpeg(
            pf.skin_image(800, 600, seed=105),
            quality=90,
            adobe_rgb=True,
            date_time_original="2026:11:22 11:02:58",
        ),
        _sidecar(
            5,
            name="TEST^SAMPLE FIVE",
            birth_date="1961-09-27",
            sex="O",
            body_site="abdomen",
            laterality=None,
            description="SYNTHETIC pigmented lesion, follow-up",
            scope=["clinical-care", "teaching", "publication"],
            date="2026-11-22",
            role="physician",
        ),
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory (default: sample_data/)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for sample in SAMPLES:
        data = sample.build()
        (out / sample.name).write_bytes(data)
        sidecar = json.dumps(sample.sidecar, indent=2, ensure_ascii=False) + "\n"
        (out / f"{sample.name}.json").write_text(sidecar, encoding="utf-8")
        print(f"{sample.name}: {len(data)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
