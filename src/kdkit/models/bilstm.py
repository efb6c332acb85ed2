"""A bidirectional-LSTM sequence classifier, the non-transformer student of cross-architecture distillation.

Universal-KD (Wu et al., EMNLP 2021) distils BERT into a BiLSTM (and a CNN) by matching per-layer probe logits,
which needs no shared architecture; this model is that student, in the style of Tang et al. 2019 ("Distilling
task-specific knowledge from BERT into simple neural networks"): word embeddings, stacked BiLSTM layers, a pooled
sentence vector and a small MLP classifier.

It is an ordinary transformers ``PreTrainedModel`` so that kdkit's capture, terms, trainer and export work on it
unchanged and a saved folder loads again with ``AutoModelForSequenceClassification`` (after ``import kdkit``,
which registers the model type ``kdkit-bilstm``):

- ``config.hidden_size`` is the width of every hidden state, i.e. both directions together (each direction has
  ``hidden_size // 2`` units); ``config.num_hidden_layers`` is the number of BiLSTM layers.
- ``output_hidden_states=True`` returns ``num_hidden_layers + 1`` tensors (B, L, hidden_size): index 0 is the
  embedding output (after the embedding → hidden_size projection, present only when ``embedding_size`` differs
  from ``hidden_size``, as in ALBERT), index l the output of BiLSTM layer l.
- Padding never changes the outputs of real tokens: real tokens are packed (``pack_padded_sequence``), so an LSTM
  never reads a padding position, whichever side the padding is on; hidden states are 0 at padding positions.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("max", "mean", "cls")


@strict
class BiLSTMConfig(PreTrainedConfig):
    """Shape of a :class:`BiLSTMForSequenceClassification`.

    vocab_size / embedding_size: the word-embedding matrix (V, E). hidden_size: width of each layer's output, both
    directions together (must be even). num_hidden_layers: stacked BiLSTM layers. dropout: on the embeddings,
    between layers and in the classifier. pooling: how the last layer becomes a sentence vector: ``max`` (over real
    tokens, default), ``mean`` (over real tokens) or ``cls`` (the first real token). classifier_hidden_size: width
    of the ReLU layer of the classifier MLP (default: hidden_size).
    """

    model_type = "kdkit-bilstm"

    vocab_size: int = 30522
    embedding_size: int = 300
    hidden_size: int = 300
    num_hidden_layers: int = 1
    dropout: float | int = 0.1
    pooling: str = "max"
    classifier_hidden_size: int | None = None
    pad_token_id: int | None = 0
    initializer_range: float = 0.02

    def validate_architecture(self):
        super().validate_architecture()
        if self.hidden_size <= 0 or self.hidden_size % 2:
            raise ValueError(f"BiLSTM hidden_size={self.hidden_size} must be a positive even number (both "
                             f"directions together)")
        if self.num_hidden_layers < 1:
            raise ValueError(f"BiLSTM num_hidden_layers={self.num_hidden_layers} must be at least 1")
        if self.pooling not in POOLINGS:
            raise ValueError(f"BiLSTM pooling={self.pooling!r} is not supported; valid: {', '.join(POOLINGS)}")


class BiLSTMPreTrainedModel(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    # LSTM weights are not meant for sdpa/flash; nothing here is attention
    _supports_sdpa = False


class BiLSTMForSequenceClassification(BiLSTMPreTrainedModel):
    """Embeddings → [projection] → num_hidden_layers BiLSTMs → pooling → MLP → logits (B, num_labels)."""

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.embedding_projection = (nn.Linear(config.embedding_size, config.hidden_size)
                                     if config.embedding_size != config.hidden_size else nn.Identity())
        # one nn.LSTM per layer (not num_layers=N) so that each layer's output is a hidden state and the layers
        # are the model's block list (kdkit.students.find_layers)
        self.layers = nn.ModuleList(
            nn.LSTM(config.hidden_size, config.hidden_size // 2, batch_first=True, bidirectional=True)
            for _ in range(config.num_hidden_layers))
        self.dropout = nn.Dropout(config.dropout)
        width = config.classifier_hidden_size or config.hidden_size
        self.pre_classifier = nn.Linear(config.hidden_size, width)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None, **kwargs):
        if output_attentions:
            raise ValueError("a BiLSTM has no attention maps; output_attentions=True is not supported")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        mask = mask.bool()
        # real tokens first, in their order, so that packing sees each row's tokens whatever side pads it
        order = torch.sort((~mask).int(), dim=1, stable=True).indices
        lengths = mask.sum(dim=1)
        keep = mask.unsqueeze(-1)

        x = self.embedding_projection(self.embeddings(input_ids)) * keep
        hidden_states = [x]
        x = self.dropout(x)
        # a row without real tokens is run on one position and zeroed afterwards (packing needs length >= 1)
        packed_lengths = lengths.clamp(min=1).cpu()
        for index, lstm in enumerate(self.layers):
            packed = pack_padded_sequence(_gather(x, order), packed_lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
            x = _scatter(out, order) * keep
            hidden_states.append(x)
            if index + 1 < len(self.layers):
                x = self.dropout(x)

        pooled = self.dropout(_pool(x, mask, order, self.config.pooling))
        logits = self.classifier(self.dropout(torch.relu(self.pre_classifier(pooled))))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=tuple(hidden_states) if output_hidden_states else None)


def _gather(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _scatter(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_gather`: put position j of each row back at ``order[:, j]``."""
    return torch.zeros_like(x).scatter(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)


def _pool(x: torch.Tensor, mask: torch.Tensor, order: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, D) → (B, D) over real tokens only; a row without real tokens pools to 0."""
    keep = mask.unsqueeze(-1)
    if how == "cls":
        return _gather(x, order[:, :1]).squeeze(1) * keep.any(dim=1)
    if how == "mean":
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    # max: padding filled with the dtype's lowest value (not -inf, so an empty row gives no inf/NaN)
    pooled = x.masked_fill(~keep, torch.finfo(x.dtype).min).amax(dim=1)
    return pooled * keep.any(dim=1)


def register() -> None:
    """Let ``AutoConfig`` / ``AutoModelForSequenceClassification`` load saved BiLSTM folders (idempotent)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig)
        AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification)
    except ValueError:  # already registered
        pass
