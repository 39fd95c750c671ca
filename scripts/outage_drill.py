"""Outage drill: N photos arrive while the PACS (a real Orthanc) is down for S seconds; then it
comes back on the same storage. Prints photos, outage length, lost, duplicated, resends, time to
drain. Run: .venv/bin/python scripts/outage_drill.py [--photos 200] [--outage 60]

Exactly once means one instance per photo in the PACS; a resend under the same SOP Instance UID
after an unclear outcome is allowed and counted (Orthanc answers success and keeps the first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from gateway.item import State  # noqa: E402
from gateway.node import Node  # noqa: E402
from gateway.orthanc import EmbeddedOrthanc  # noqa: E402
from gateway.settings import Settings, write_key_file  # noqa: E402
from photo_factory import make_jpeg  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the PACS is down")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outage-drill-") as tmp:
        root = Path(tmp)
        write_key_file(root / "staging.key")
        write_key_file(root / "pseudonym.key")
        pacs = EmbeddedOrthanc(root / "orthanc")
        pacs.start()
        cfg = Settings.model_validate({
            "staging": {"directory": str(root / "staging"), "key_file": str(root / "staging.key")},
            "deid": {"secret_file": str(root / "pseudonym.key")},
            "destinations": {"pacs": {"address": str(pacs.address),
                                      "retry": {"attempts": 1000, "initial_s": 1, "max_s": 10}}},
            "routes": [{"to": ["pacs"]}],
        })
        node = Node(cfg, step_interval_s=0.25)
        node.start()
        try:
            pacs.stop()
            down = time.monotonic()
            for i in range(args.photos):
                meta = {"patient": {"id": f"DRILL{i:05d}", "issuer": "HOSP"},
                        "consent": {"status": "granted", "scope": ["clinical-care"]}}
                node.intake.accept_photo(make_jpeg(width=96, height=64, seed=i), meta, source="cli")
            staged_s = time.monotonic() - down
            time.sleep(max(0.0, args.outage - (time.monotonic() - down)))
            pacs.start()
            outage_s = time.monotonic() - down
            up = time.monotonic()
            while node.journal.counts()[State.PURGED] < args.photos:
                if time.monotonic() - up > args.drain_timeout:
                    break
                time.sleep(0.2)
            drain_s = time.monotonic() - up
            counts = node.journal.counts()
            stored = pacs.instance_count()
            result = {
                "photos": args.photos,
                "staged_in_s": round(staged_s, 2),
                "outage_s": round(outage_s, 1),
                "in_pacs": stored,
                "lost": args.photos - stored,
                "duplicated": max(0, stored - args.photos),
                "resends_same_uid": node.pipeline.counters.resent,
                "retries": node.pipeline.counters.retries,
                "drain_s_after_pacs_back": round(drain_s, 1),
                "journal": {s.value: n for s, n in counts.items() if n},
                "staging_left": len(node.staging.item_ids()),
            }
            print(json.dumps(result, indent=2))
            ok = result["lost"] == 0 and result["duplicated"] == 0 and result["staging_left"] == 0
            return 0 if ok else 1
        finally:
            node.stop()
            pacs.stop()


if __name__ == "__main__":
    sys.exit(main())
