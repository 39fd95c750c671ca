"""The demo: a local Orthanc on loopback, every photo in sample_data/ sent through the gateway's
own command line, and where each one landed in the PACS. `--keep` leaves Orthanc running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.orthanc import EmbeddedOrthanc

REPO = Path(__file__).resolve().parent.parent
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".heic", ".heif"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep Orthanc running until Ctrl-C")
    parser.add_argument("--samples", type=Path, default=REPO / "sample_data")
    args = parser.parse_args(argv)
    photos = sorted(p for p in args.samples.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        print(f"demo: no photos in {args.samples}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="photo-gateway-demo-") as tmp, EmbeddedOrthanc(Path(tmp) / "pacs") as pacs:
        print(f"demo: Orthanc {pacs.address} at {pacs.url}")
        env = dict(os.environ, XDG_DATA_HOME=str(Path(tmp) / "state"))
        env.pop("PHOTO_GATEWAY_CONFIG", None)
        run = subprocess.run(
            [sys.executable, "-m", "gateway", "send", *map(str, photos), "--to", str(pacs.address)],
            env=env, capture_output=True, text=True,
        )
        sys.stderr.write(run.stderr)
        for line in run.stdout.splitlines():
            # "<photo> -> AET@HOST:PORT <SOPInstanceUID>"
            photo, _, rest = line.partition(" -> ")
            sop_uid = rest.split()[-1]
            orthanc_id = pacs.find_instance(sop_uid)
            if orthanc_id is None:
                print(f"demo: {photo}: NOT FOUND in Orthanc", file=sys.stderr)
                return 1
            tags = pacs.get(f"/instances/{orthanc_id}/simplified-tags")
            print(
                f"{Path(photo).name}: patient {tags.get('PatientID')} study {tags.get('StudyInstanceUID')}\n"
                f"    instance {sop_uid}\n"
                f"    {pacs.url}/app/explorer.html#instance?uuid={orthanc_id}"
            )
        print(f"demo: {pacs.instance_count()} instance(s) in Orthanc, {time.monotonic() - started:.1f} s, "
              f"send exit code {run.returncode}")
        if args.keep and run.returncode == 0:
            print("demo: Orthanc keeps running; Ctrl-C stops it")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return run.returncode


if __name__ == "__main__":
    sys.exit(main())
