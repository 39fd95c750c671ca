"""Routing rules → destinations (pure). Every matching route applies; an item goes to each
destination of their union once, with the IOD the first matching route (or the destination) asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.settings import Destination, Route


@dataclass(frozen=True)
class Facts:
    """What routes may match on; no PHI (body site and consent scope are coded values)."""

    source: str
    calling_ae: str | None = None
    body_site: str | None = None
    modality: str | None = None
    consent_scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    destination: str
    iod: str  # "sc" | "vl-photo"


def _matches(route: Route, facts: Facts) -> bool:
    m = route.match
    if m.source is not None and m.source != facts.source:
        return False
    if m.calling_ae is not None and m.calling_ae != facts.calling_ae:
        return False
    if m.body_site is not None and m.body_site.strip().lower() != (facts.body_site or ""):
        return False
    if m.modality is not None and m.modality != facts.modality:
        return False
    return m.consent_scope is None or m.consent_scope in facts.consent_scope


def targets(routes: Sequence[Route], destinations: dict[str, Destination], facts: Facts) -> list[Target]:
    """The destinations this item goes to, each once, in route order; [] if no route matches."""
    chosen: dict[str, Target] = {}
    for route in routes:
        if not _matches(route, facts):
            continue
        for name in route.to:
            if name not in chosen:
                iod = route.iod or destinations[name].iod or "sc"
                chosen[name] = Target(name, iod)
    return list(chosen.values())
