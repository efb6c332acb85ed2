"""The learners of dataset distillation: LeNet for images and a text CNN for sentences in embedding space, as the
reference implementations build them.

LeNet (LeCun et al. 1998, as in Wang et al. 2018 and Sucholutsky & Schonlau 2021): conv 5×5 → 6 channels (padding
2 for 28×28 inputs), ReLU, 2×2 max-pool, conv 5×5 → 16, ReLU, 2×2 max-pool, then 120 → 84 → classes fully
connected with ReLU; no batch norm, no dropout. Inputs smaller than 16 pixels a side (scikit-learn's 8×8 digits)
pad the second convolution as well, so both poolings keep a map. Weights start Xavier-normal (gain 1), biases 0,
from a seeded generator (:func:`initialise`).

TextCNN (Kim 2014; the reference's ``TextConvNet``): a sentence ``(L, d)`` of word vectors, 100 filters each of
widths 3, 4 and 5 over the positions, ReLU, max over positions, concatenated (300) → classes. The reference's
dropout (0.5) is left out: the unrolled inner steps are then deterministic, the same at distillation and when a
fresh model learns from the set.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self, channels: int, size: int, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2 if size <= 28 else 0)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2 if size < 16 else 0)
        self.pool = nn.MaxPool2d(2)
        with torch.no_grad():
            features = self._features(torch.zeros(1, channels, size, size)).shape[1]
        self.fc1, self.fc2, self.fc3 = nn.Linear(features, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        return self.pool(torch.relu(self.conv2(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self._features(x)))
        return self.fc3(torch.relu(self.fc2(x)))


def initialise(model: nn.Module, seed: int) -> nn.Module:
    """Xavier-normal weights (gain 1) and zero biases for every convolution and linear layer, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                fan_out = module.weight.shape[0] * module.weight[0][0].numel()
                std = (2.0 / (fan_in + fan_out)) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.zero_()
    return model


class TextCNN(nn.Module):
    def __init__(self, length: int, dim: int, classes: int, filters: int = 100, widths: tuple[int, ...] = (3, 4, 5)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, min(w, length)) for w in widths)
        self.out = nn.Linear(filters * len(widths), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, d, L)
        return self.out(torch.cat([torch.relu(conv(x)).amax(-1) for conv in self.convs], -1))


MODELS = {"lenet": LeNet, "textcnn": TextCNN}
KINDS = {"lenet": "image", "textcnn": "text"}


def build_model(name: str, shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    """A learner ``name`` for inputs of ``shape`` ((channels, H, W) images, (L, d) sentences), initialised from
    ``seed``."""
    model = LeNet(shape[0], shape[1], classes) if name == "lenet" else TextCNN(shape[0], shape[1], classes)
    return initialise(model, seed)
