"""The agreement gate at load: a runtime/precision the bundle did not check at export must
predict the same labels as the fp32 ONNX Runtime graph on >= 99.5% of texts, per head.

The texts are the bundle's own dev rows (``holdout/``, every head's files, taken in turn) or,
in bundles without them, :data:`FIXED_TEXTS`; at most :data:`MAX_TEXTS` so a load stays fast.
Every head is compared on every text (labels need no gold answer to agree).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from itertools import zip_longest

import numpy as np

from streamer.enums import Device, Variant
from streamer.model.bundle import Bundle
from streamer.model.errors import InferenceError
from streamer.model.runtime import OrtRuntime, Runtime
from streamer.model.tokenizer import Encoded

MIN_AGREEMENT = 0.995
MAX_TEXTS = 256
BATCH = 32
FIXED_TEXTS = (
    "Shares of $ACME fell 12% after the profit warning.",
    "The company reported record quarterly revenue and raised its full-year guidance.",
    "Fed holds rates steady, signals two cuts later this year.",
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "The board proposes a dividend of EUR 0.50 per share.",
    "Oil prices slid as OPEC+ weighed a larger output increase.",
    "$TSLA downgraded to underperform at Baird, price target cut to $120",
    "Gold hits a two-month high as the dollar weakens",
    "The bank agreed to buy its smaller rival for $2.1 billion in cash and stock.",
    "CEO steps down effective immediately; CFO named interim chief.",
    "Treasury yields climb after a hotter-than-expected inflation print.",
    "The IPO priced above its range and opened 30% higher.",
    "Regulators fined the exchange $50 million over reporting failures.",
    "Net sales decreased by 5.2% to EUR 35.4 million.",
    "Analysts expect the merger to close in the second quarter.",
    "Markets wrap: stocks edge up, tech leads, bonds steady",
    "This is the worst product I have ever bought, it broke after a day.",
    "Absolutely loved the film, the acting was superb.",
    "ok",
    "The euro fell against the yen amid renewed political uncertainty in Italy.",
    "Earnings per share came in at $1.12 versus a consensus of $1.05.",
    "The company said it would cut 1,200 jobs as part of a restructuring plan.",
    "Bitcoin rallies past $70,000 for the first time since March",
    "Copper futures dropped for a third session on weak Chinese demand.",
    "The central bank raised its benchmark rate by 25 basis points.",
    "Q3 revenue was flat year over year at $4.3 billion.",
    "Investors cheered the buyback announcement, sending the stock up 8%.",
    "Supply-chain problems will weigh on margins through next year, the company warned.",
    "Parliament passed the budget bill after a late-night vote.",
    "The service was fine, nothing special.",
    "Moody's cuts the outlook on the country's debt to negative.",
    "The fund manager sees value in small caps after the selloff.",
)


def gate_texts(bundle: Bundle, limit: int = MAX_TEXTS) -> list[str]:
    """Up to ``limit`` distinct dev texts of the bundle (every holdout file in turn), else FIXED_TEXTS."""
    files = [
        entry["path"]
        for entries in (bundle.manifest.get("holdout") or {}).values()
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    ]
    columns: list[list[str]] = []
    for rel in files:
        try:
            with (bundle.path / rel).open(encoding="utf-8", newline="") as fh:
                columns.append([row["text"] for row in csv.DictReader(fh) if row.get("text")])
        except (OSError, KeyError, csv.Error):
            continue  # load_bundle verified the files; an odd one only loses its texts here
    texts: list[str] = []
    seen: set[str] = set()
    for row in zip_longest(*columns):
        for text in row:
            if text is not None and text not in seen:
                seen.add(text)
                texts.append(text)
                if len(texts) >= limit:
                    return texts
    return texts or list(FIXED_TEXTS)


def labels(
    run: Callable[[Encoded], list[np.ndarray]],
    encode: Callable[[Sequence[str]], Encoded],
    texts: Sequence[str],
) -> list[np.ndarray]:
    """Argmax label index per head for ``texts`` (sorted by length, batches of BATCH)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        parts.append([x.argmax(axis=1) for x in run(encode([texts[i] for i in rows]))])
    out = [np.empty(len(texts), dtype=np.int64) for _ in parts[0]] if parts else []
    for start, part in zip(range(0, len(order), BATCH), parts, strict=True):
        rows = order[start : start + BATCH]
        for head_out, got in zip(out, part, strict=True):
            head_out[rows] = got
    return out


def agreement(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], heads: Sequence[str]
) -> dict[str, float]:
    """Share of texts with the same label, per head."""
    return {
        head: float(np.mean(ref == got)) if len(ref) else 1.0
        for head, ref, got in zip(heads, reference, candidate, strict=True)
    }


def check_agreement(per_head: dict[str, float], n: int, what: str, minimum: float = MIN_AGREEMENT) -> None:
    """Refuse ``what`` (e.g. 'openvino bf16') if any head agrees with fp32 on less than ``minimum``."""
    for head, share in per_head.items():
        if share < minimum:
            raise InferenceError(
                f"{what}: head {head!r} agrees with the fp32 ONNX Runtime labels on {share:.2%} of {n} "
                f"texts (< {minimum:.1%}); serve another model.precision / model.runtime"
            )


def run_gate(
    bundle: Bundle,
    encode: Callable[[Sequence[str]], Encoded],
    candidate: Runtime,
    what: str,
    *,
    threads: int = 0,
    texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """Agreement of ``candidate`` with the fp32 graph on ONNX Runtime CPU; refuses below MIN_AGREEMENT."""
    pool = list(texts) if texts is not None else gate_texts(bundle)
    reference = OrtRuntime(
        bundle, bundle.onnx_path(Variant.FP32), device=Device.CPU, intra_op_threads=threads
    )
    ref = labels(reference.run, encode, pool)
    del reference
    per_head = agreement(ref, labels(candidate.run, encode, pool), [h.name for h in bundle.heads])
    check_agreement(per_head, len(pool), what)
    return per_head
