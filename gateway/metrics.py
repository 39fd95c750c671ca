"""Prometheus text exposition (format 0.0.4) of the journal and the pipeline counters, and a
small server for `metrics.port` when the HTTP door is off. Counts and states only: no PHI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.item import State
from gateway.pipeline import Counters


def render(counts: dict[State, int], counters: Counters) -> str:
    lines = [
        "# HELP photo_gateway_items Items in the journal by state.",
        "# TYPE photo_gateway_items gauge",
        *(f'photo_gateway_items{{state="{s.value}"}} {n}' for s, n in counts.items()),
        "# HELP photo_gateway_quarantined_waiting Items waiting for an operator (alert when > 0).",
        "# TYPE photo_gateway_quarantined_waiting gauge",
        f"photo_gateway_quarantined_waiting {counts.get(State.QUARANTINED, 0)}",
    ]
    for name, help_text in (
        ("stored", "Objects the PACS accepted (C-STORE success or warning)."),
        ("resent", "C-STOREs repeated after an unclear outcome, under the same SOP Instance UID."),
        ("retries", "Transient failures that were scheduled for another attempt."),
        ("committed", "Storage commitments confirmed."),
        ("purged", "Items whose staging was removed after confirmation."),
        ("quarantined", "Items quarantined since start."),
    ):
        lines += [f"# HELP photo_gateway_{name}_total {help_text}",
                  f"# TYPE photo_gateway_{name}_total counter",
                  f"photo_gateway_{name}_total {getattr(counters, name)}"]
    lines += ["# HELP photo_gateway_store_status_total C-STORE answers by status.",
              "# TYPE photo_gateway_store_status_total counter"]
    lines += [f'photo_gateway_store_status_total{{status="{k}"}} {v}' for k, v in sorted(counters.by_status.items())]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """/metrics, /livez and /readyz on their own port (only when the HTTP door is off)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], metrics: Callable[[], str]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, outer.metrics(), "text/plain; version=0.0.4")
                elif self.path == "/livez":
                    self._send(200, "ok\n", "text/plain")
                elif self.path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, "ready\n" if ok else "not ready\n", "text/plain")
                else:
                    self._send(404, "not found\n", "text/plain")

            def _send(self, code: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # no access log: paths only, but keep quiet
                return

        self.ready, self.metrics = ready, metrics
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
