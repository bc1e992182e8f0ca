"""Tokenizing for the model: Hugging Face ``tokenizers`` (Rust), truncation and padding as exported.

The tokenizer is configured once at load (truncation at the bundle's ``max_length``, padding
to the longest text of a call), then only read, so worker threads may share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from streamer.model.bundle import Bundle
from streamer.model.errors import InferenceError


@dataclass(frozen=True)
class Encoded:
    """A right-padded batch of token ids, with which rows were truncated and each row's length."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def unknown_token_id(tok: Tokenizer) -> int | None:
    """The id of the tokenizer's unknown token ([UNK], <unk>), None if it has none."""
    names = [getattr(tok.model, "unk_token", None), "[UNK]", "<unk>"]
    for name in names:
        if isinstance(name, str):
            found = tok.token_to_id(name)
            if found is not None:
                return int(found)
    return None


def pad_token_of(tok: Tokenizer) -> tuple[int | None, str]:
    """The tokenizer's own padding token if configured, else [PAD] (BERT) or <pad> (MPNet, RoBERTa)."""
    configured = tok.padding
    if configured and configured.get("pad_token") is not None:
        return int(configured["pad_id"]), str(configured["pad_token"])
    for token in ("[PAD]", "<pad>"):
        pad_id = tok.token_to_id(token)
        if pad_id is not None:
            return pad_id, token
    return None, ""


def load_tokenizer(bundle: Bundle) -> Tokenizer:
    """The bundle's tokenizer, truncating at its ``max_length`` and padding to the longest text."""
    try:
        tok = Tokenizer.from_file(str(bundle.tokenizer_path))
    except Exception as exc:
        raise InferenceError(f"{bundle.tokenizer_path}: not a loadable tokenizer: {exc}") from exc
    pad_id, pad_token = pad_token_of(tok)
    if pad_id is None:
        raise InferenceError(f"{bundle.tokenizer_path}: tokenizer has no padding token ([PAD] or <pad>)")
    tok.enable_truncation(max_length=bundle.max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


def encode(tok: Tokenizer, texts: Sequence[str]) -> Encoded:
    """Token ids and masks of ``texts`` in one ``encode_batch`` call (parallel in Rust)."""
    if not texts:
        empty = np.zeros((0, 0), dtype=np.int64)
        return Encoded(empty, empty.copy(), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
    encs = tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encs], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
    truncated = np.asarray([bool(e.overflowing) for e in encs], dtype=bool)
    return Encoded(ids, mask, truncated, mask.sum(axis=1))
