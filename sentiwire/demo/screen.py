"""The demo's live view: one line per label (rate-limited), every alert, status lines."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

RESET, DIM, BOLD, RED, GREEN, YELLOW, CYAN = (
    "\033[0m",
    "\033[2m",
    "\033[1m",
    "\033[31m",
    "\033[32m",
    "\033[33m",
    "\033[36m",
)
SENTIMENT_COLOR = {"negative": RED, "positive": GREEN, "neutral": DIM}


def format_label(rec: Mapping[str, Any], *, width: int = 120, color: bool = False) -> str:
    """``12:03:01  negative 0.93  Earnings        [TSLA]  Tesla cuts guidance ...`` on one line."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    labels = rec.get("labels") or {}
    sent = labels.get("sentiment") or {}
    topic = labels.get("topic") or {}
    ts = (rec.get("source") or {}).get("timestamp")
    when = (
        datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%H:%M:%S")
        if isinstance(ts, int | float)
        else "--:--:--"
    )
    s_label = str(sent.get("label", "?"))
    s_part = paint(f"{s_label:<8} {float(sent.get('score', 0.0)):.2f}", SENTIMENT_COLOR.get(s_label, ""))
    t_part = f"{str(topic.get('label', '-'))[:22]:<22}"
    tickers = rec.get("tickers") or []
    tick = ("[" + ",".join(str(t) for t in tickers[:3]) + "] ") if tickers else ""
    text = " ".join(str(rec.get("text", "")).split())
    head = f"{when}  {s_part}  {t_part}  {tick}"
    visible = len(head) - (len(s_part) - len(f"{s_label:<8} 0.00")) if color else len(head)
    room = max(20, width - visible)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return head + text


def format_alert_line(doc: Mapping[str, Any], *, color: bool = False) -> str:
    try:
        from streamer.alerting.console import format_alert

        line = format_alert(doc)
    except ImportError:  # alerting not installed: still show the essentials
        line = f"{str(doc.get('state', '?')).upper()}  {doc.get('scope_kind')} {doc.get('scope')}"
    marker = "ALERT " + line
    if not color:
        return marker
    return f"{BOLD}{RED if doc.get('state') == 'firing' else YELLOW}{marker}{RESET}"


class Screen:
    """Prints label lines at a bounded rate (all alerts always), plus status lines."""

    def __init__(self, out: TextIO, max_lines_per_s: float) -> None:
        self.out = out
        self.color = out.isatty() and os.environ.get("NO_COLOR") is None
        self.width = shutil.get_terminal_size((120, 40)).columns
        self.min_gap = 1.0 / max_lines_per_s if max_lines_per_s > 0 else 0.0
        self._last = 0.0

    def label(self, rec: Mapping[str, Any]) -> bool:
        now = time.monotonic()
        if now - self._last < self.min_gap:
            return False
        self._last = now
        print(format_label(rec, width=self.width, color=self.color), file=self.out, flush=True)
        return True

    def alert(self, doc: Mapping[str, Any]) -> None:
        print(format_alert_line(doc, color=self.color), file=self.out, flush=True)

    def status(self, text: str) -> None:
        print(f"{CYAN}{text}{RESET}" if self.color else text, file=self.out, flush=True)
