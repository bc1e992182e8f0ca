"""Terminal rendering of an alerts-topic record (``make demo``, ``sentiwire alert`` users).

An incident is one line for the scope that explains it, then one indented line per related
scope (firing) or their names (updated, resolved). A decision made long after its window
(``backfill``) says so, with the event time and how far behind it was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

RELATION = {
    "explained_by": "explained by",
    "explains": "explains",
    "part_of": "part of",
    "contains": "contains",
    "linked": "with",
}


def _hhmmss(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%SZ")


def _duration(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _scope(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('scope_kind', '?')} {doc.get('scope', '?')}"


def _shares(doc: Mapping[str, Any]) -> str:
    share = float(doc.get("negative_share") or 0.0)
    base = float(doc.get("baseline_share") or 0.0)
    return f"negative {share:.0%} ({doc.get('negatives') or 0:g}/{doc.get('count') or 0:g}) vs baseline {base:.0%}"


def related_line(rel: Mapping[str, Any]) -> str:
    """``+ topic Macro  negative 45% (9/20) vs baseline 20%  explained by entity TSLA``."""
    how = RELATION.get(str(rel.get("relation")), str(rel.get("relation") or ""))
    via = str(rel.get("via") or "").replace(":", " ", 1)
    parts = [f"+ {_scope(rel)}", _shares(rel)]
    if how and via:
        parts.append(f"{how} {via}")
    if rel.get("state") == "resolved":
        parts.append("(resolved)")
    return "  ".join(parts)


def format_alert(doc: Mapping[str, Any], *, example_chars: int = 90) -> str:
    """``FIRING  entity NOK  negative 87% (26/30) vs baseline 15%  bound 0.71 > 0.25  since 12:03:30Z  "..."``.

    Related scopes of an incident follow on indented lines (a firing record) or as names.
    """
    state = str(doc.get("state", "?")).upper()
    stat = doc.get("statistic") or {}
    value = float(stat.get("value") or 0)
    parts = [f"{state:<8}", _scope(doc)]
    if state != "UPDATED":
        parts.append(_shares(doc))
        parts.append(
            f"bound {value:.2f} > {float(stat.get('threshold') or 0):.2f}"
            if state == "FIRING"
            else f"bound {value:.2f}"
        )
    parts.append(f"since {_hhmmss(doc.get('started_at'))}")
    if state == "RESOLVED":
        parts.append(f"resolved {_hhmmss(doc.get('resolved_at'))}")
    timing = doc.get("timing") or {}
    if doc.get("backfill"):
        parts.append(
            f"BACKFILL: window {_hhmmss(timing.get('event_time'))}, decided "
            f"{_duration(float(timing.get('lag_s') or 0))} later"
        )
    examples = doc.get("examples") or []
    if examples and state == "FIRING":
        text = str(examples[-1].get("text") or "").replace("\n", " ")
        if len(text) > example_chars:
            text = text[: example_chars - 1] + "…"
        parts.append(f'e.g. "{text}"')
    related = [r for r in doc.get("related") or [] if isinstance(r, Mapping)]
    if related and state != "FIRING":
        parts.append("related: " + ", ".join(_scope(r) for r in related))
    line = "  ".join(parts)
    if related and state == "FIRING":
        line += "".join(f"\n{'':10}{related_line(r)}" for r in related)
    return line
