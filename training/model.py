"""Shared encoder + one linear head per task (torch; import only from training code).

Mean pooling over real tokens: the sentence-transformers checkpoints we start from
(all-MiniLM-L6-v2, all-mpnet-base-v2) were trained with it, so it is the pooled
representation they are good at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamer.model.bundle import HeadSpec

# A tiny random BERT that still uses the real MiniLM vocabulary (tests, fixtures, e2e).
TINY_BERT: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-6)


class MultiHeadClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, hidden_size: int, heads: Sequence[HeadSpec], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head_specs = tuple(heads)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({h.name: nn.Linear(hidden_size, len(h.labels)) for h in heads})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.dropout(mean_pool(out.last_hidden_state, attention_mask))
        return {name: head(pooled) for name, head in self.heads.items()}


class ExportWrapper(nn.Module):
    """Tuple outputs in bundle head order, for ``torch.onnx.export``."""

    def __init__(self, model: MultiHeadClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(input_ids, attention_mask)
        return tuple(logits[h.name] for h in self.model.head_specs)


def load_encoder(model_dir: Path) -> tuple[nn.Module, int]:
    """Pretrained encoder from a local directory (offline), eager attention for a clean ONNX graph."""
    from transformers import AutoModel

    encoder: Any = AutoModel.from_pretrained(
        str(model_dir), attn_implementation="eager", local_files_only=True
    )
    return encoder, int(encoder.config.hidden_size)


def random_encoder(config_kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    """Tiny randomly initialised BERT (tests, fixtures): same code path as a real encoder."""
    from transformers import BertConfig, BertModel

    config = BertConfig(**config_kwargs)
    config._attn_implementation = "eager"
    encoder: Any = BertModel(config, add_pooling_layer=False)
    return encoder, int(config.hidden_size)
