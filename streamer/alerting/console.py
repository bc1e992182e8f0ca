"""One-line rendering of an alerts-topic record for terminals (``make demo``, ``sentiwire alert``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def _hhmmss(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%SZ")


def format_alert(doc: Mapping[str, Any], *, example_chars: int = 90) -> str:
    """``FIRING  entity NOK  negative 87% (26/30) vs baseline 15%  bound 0.71 > 0.25  since 12:03:30Z  "..."``."""
    state = str(doc.get("state", "?")).upper()
    scope = f"{doc.get('scope_kind', '?')} {doc.get('scope', '?')}"
    share = float(doc.get("negative_share") or 0.0)
    base = float(doc.get("baseline_share") or 0.0)
    count = doc.get("count") or 0
    negatives = doc.get("negatives") or 0
    stat = doc.get("statistic") or {}
    parts = [
        f"{state:<8}",
        f"{scope}",
        f"negative {share:.0%} ({negatives:g}/{count:g}) vs baseline {base:.0%}",
        f"bound {float(stat.get('value') or 0):.2f} > {float(stat.get('threshold') or 0):.2f}"
        if state == "FIRING"
        else f"bound {float(stat.get('value') or 0):.2f}",
        f"since {_hhmmss(doc.get('started_at'))}",
    ]
    if state == "RESOLVED":
        parts.append(f"resolved {_hhmmss(doc.get('resolved_at'))}")
    examples = doc.get("examples") or []
    if examples and state == "FIRING":
        text = str(examples[-1].get("text") or "").replace("\n", " ")
        if len(text) > example_chars:
            text = text[: example_chars - 1] + "…"
        parts.append(f'e.g. "{text}"')
    return "  ".join(parts)
