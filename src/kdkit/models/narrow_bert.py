"""A BERT sequence classifier whose layers keep fewer attention heads than ``hidden_size / head_size`` (a DynaBERT
sub-network, :mod:`kdkit.students.adaptive`).

``transformers`` 5 derives a BERT's head size from ``hidden_size / num_attention_heads`` and no longer prunes heads,
so a BERT with 6 heads of 32 dimensions over a 384-wide residual stream is not expressible by configuration alone.
:class:`NarrowBertForSequenceClassification` builds the usual BERT (``num_attention_heads`` is the head count the
head size comes from) and then narrows every layer's query/key/value projections to ``config.kept_heads`` heads
and the attention output projection's input to match. Nothing else changes, so it computes exactly BERT's function
for the weights it holds.

This file imports torch and transformers only, so an exported folder carries it as its modelling code:
``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``.
"""

from __future__ import annotations

from torch import nn
from transformers import BertForSequenceClassification


def narrow_attention(encoder: nn.Module, heads: int) -> None:
    """Give every layer of ``encoder`` ``heads`` attention heads of the same size (fresh, unset weights)."""
    for layer in encoder.layer:
        attention = layer.attention.self
        units = heads * attention.attention_head_size
        hidden = attention.query.in_features
        attention.query, attention.key, attention.value = (nn.Linear(hidden, units) for _ in range(3))
        attention.num_attention_heads, attention.all_head_size = heads, units
        layer.attention.output.dense = nn.Linear(units, hidden)


class NarrowBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` with ``config.kept_heads`` heads per layer."""

    def __init__(self, config):
        super().__init__(config)
        narrow_attention(self.bert.encoder, config.kept_heads)
