"""Which companies a labeled message is about: its ``tickers`` field, ``$CASHTAG``s, aliases."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# $TSLA, $BRK.B; not $100 or $5.2bn (a cashtag starts with a letter).
CASHTAG_RE = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,2})?)\b")


def normalize_ticker(raw: str) -> str:
    return raw.strip().lstrip("$").upper()


class EntityExtractor:
    """Turns a record's tickers, cashtags and configured aliases into canonical entity names."""

    def __init__(
        self, aliases: Mapping[str, Iterable[str]] | None = None, *, max_per_message: int = 10
    ) -> None:
        self.max_per_message = max_per_message
        self._alias_re: re.Pattern[str] | None = None
        self._alias_to_entity: dict[str, str] = {}
        for entity, names in (aliases or {}).items():
            canonical = normalize_ticker(entity)
            # The symbol itself is not an alias: "NOK" in prose is often the krone; $NOK is a cashtag.
            for name in names:
                self._alias_to_entity[name.strip().lower()] = canonical
        if self._alias_to_entity:
            # Longest first so "Tesla Inc" wins over "Tesla".
            alternatives = sorted(self._alias_to_entity, key=len, reverse=True)
            self._alias_re = re.compile(
                r"(?<!\w)(" + "|".join(re.escape(a) for a in alternatives) + r")(?!\w)", re.IGNORECASE
            )

    def extract(self, text: str | None, tickers: object = None) -> list[str]:
        """Entities in first-seen order, de-duplicated, at most ``max_per_message``.

        Messages naming more entities than that are mostly link dumps; keeping the first
        few bounds the work per message without dropping the message from other scopes.
        """
        found: dict[str, None] = {}
        if isinstance(tickers, str):
            tickers = [t for t in re.split(r"[,\s]+", tickers) if t]
        if isinstance(tickers, list | tuple):
            for t in tickers:
                if isinstance(t, str) and t.strip():
                    found[normalize_ticker(t)] = None
        if text:
            for m in CASHTAG_RE.finditer(text):
                found[normalize_ticker(m.group(1))] = None
            if self._alias_re is not None:
                for m in self._alias_re.finditer(text):
                    found[self._alias_to_entity[m.group(1).lower()]] = None
        return list(found)[: self.max_per_message]
