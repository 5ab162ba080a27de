"""The UNICON network: a causal transformer over interaction tokens.

A token is the sum of learned embeddings of the item, its categorical attributes, its
flag attributes (the mean of the embeddings of the flags set, e.g. a movie's genres), its
numeric attributes (value in [0, 1] times a learned vector, as in the paper) and the
event type, plus a learned position. A CLS token in front carries the customer features.

Attention is causal everywhere: the output at position t depends on the CLS token and
events 0..t only. Padding comes after the last event, so no real token ever sees it and
no attention row is ever empty (the CLS token is always visible).

Next-item logits are the dot product of an output with every item's vector (item plus
attributes, shared with the input: attributes let rare items borrow strength).

The lookalike head is a class-attention layer (Touvron et al., "Going deeper with image
transformers", 2021): the CLS output queries every output of the sequence. A causal CLS
token at position 0 sees only itself, and letting it attend to later tokens inside the
encoder would leak the future into next-item training, so the readout happens on top.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from .data import Vocabulary


def _module_name(name: str) -> str:
    return re.sub(r"\W", "_", name)


class CausalBlock(nn.Module):
    """A pre-norm transformer block with causal multi-head self-attention.

    Written out rather than nn.TransformerEncoderLayer so that attention goes through
    ``scaled_dot_product_attention(is_causal=True)``, whose fused CPU kernel never builds
    the T x T matrix: with an explicit mask, the layer's fast path spent a third of its
    time in a masked softmax. Dropout applies to the residual branches, not to the
    attention weights: attention dropout forces the unfused kernel and drawing its T x T
    masks took 15 % of a training step.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.projection = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(4 * d_model, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.n_heads,
                                           width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        x = x + self.dropout(self.projection(attended))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class UniconNetwork(nn.Module):
    def __init__(
        self,
        vocabulary: Vocabulary,
        max_len: int,
        d_model: int = 64,
        n_heads: int = 2,
        n_layers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.max_len = int(max_len)
        self.n_items = vocabulary.n_items
        n_codes = vocabulary.n_items + 1
        self.item_embedding = nn.Embedding(n_codes, d_model, padding_idx=0)
        self.attribute_embeddings = nn.ModuleDict()
        for name, codes in vocabulary.categorical.items():
            key = _module_name(name)
            levels = len(vocabulary.categorical_levels[name]) + 1
            self.attribute_embeddings[key] = nn.Embedding(levels, d_model, padding_idx=0)
            self.register_buffer(f"codes_{key}", torch.as_tensor(codes, dtype=torch.long))
        self.flag_embeddings = nn.ModuleDict()
        for name, table in vocabulary.flags.items():
            key = _module_name(name)
            self.flag_embeddings[key] = nn.Linear(table.shape[1], d_model, bias=False)
            weights = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
            self.register_buffer(f"flags_{key}", torch.as_tensor(weights, dtype=torch.float32))
        self.register_buffer("numeric", torch.as_tensor(vocabulary.numeric, dtype=torch.float32))
        self.numeric_weight = nn.Parameter(torch.zeros(vocabulary.numeric.shape[1], d_model))
        self.event_embedding = nn.Embedding(vocabulary.n_events + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_len + 1, d_model)
        self.cls = nn.Parameter(torch.zeros(d_model))
        self.customer_embeddings = nn.ModuleList(
            nn.Embedding(cardinality, d_model, padding_idx=0)
            for cardinality in vocabulary.customer_cardinalities()
        )
        self.blocks = nn.ModuleList(CausalBlock(d_model, n_heads, dropout)
                                    for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.output_bias = nn.Parameter(torch.zeros(n_codes - 1))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        nn.init.normal_(self.numeric_weight, std=0.02)

    def item_vectors(self) -> torch.Tensor:
        """[n_items + 1, d]: each item code's content vector (row 0, padding, is zero)."""
        vectors = self.item_embedding.weight
        for key, embedding in self.attribute_embeddings.items():
            vectors = vectors + embedding(getattr(self, f"codes_{key}"))
        for key, linear in self.flag_embeddings.items():
            vectors = vectors + linear(getattr(self, f"flags_{key}"))
        if self.numeric.shape[1]:
            vectors = vectors + self.numeric @ self.numeric_weight
        return vectors

    def forward(
        self, items: torch.Tensor, events: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """[B, L] items and events, [B, F] customer features -> [B, L + 1, d] outputs
        (position 0 is the CLS token, position t + 1 is event t)."""
        batch, length = items.shape
        if length > self.max_len:
            raise ValueError(f"sequences of {length} events exceed max_len={self.max_len}")
        tokens = self.item_vectors()[items] + self.event_embedding(events)
        cls = self.cls.expand(batch, -1)
        for f, embedding in enumerate(self.customer_embeddings):
            cls = cls + embedding(features[:, f])
        x = torch.cat([cls[:, None, :], tokens], dim=1)
        x = x + self.position_embedding(torch.arange(length + 1, device=items.device))
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def next_item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., d] outputs -> [..., n_items] scores of item codes 1..n_items."""
        return hidden @ self.item_vectors()[1:].T + self.output_bias


class ClassAttentionHead(nn.Module):
    """Core-segment logit from the CLS output attending to the whole sequence."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout,
                                               batch_first=True)
        self.output = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(dropout),
                                    nn.Linear(d_model, 1))

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        padding = positions[None, :] > lengths[:, None]  # CLS (0) and events 1..n visible
        keys = self.norm(hidden)
        attended, _ = self.attention(keys[:, :1], keys, keys, key_padding_mask=padding,
                                     need_weights=False)
        # the attended summary alone (normalised in self.output): adding the CLS output
        # back, as a residual would, let that vector (customer features only, since CLS
        # sees only itself) swamp the sequence's signal and training often stalled
        return self.output(attended[:, 0]).squeeze(-1)


class LookalikeNetwork(nn.Module):
    def __init__(self, encoder: UniconNetwork, head: ClassAttentionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, items, events, features, lengths) -> torch.Tensor:
        return self.head(self.encoder(items, events, features), lengths)
