"""int8 versions of a trained student, for size and CPU speed (SPEC.md §9: compression composes with quantisation).

:func:`quantize_int8` returns a copy of a model with

- every ``nn.Linear`` dynamically quantised (PyTorch's ``quantize_dynamic``: int8 weights with one scale per tensor,
  activations quantised per batch at run time), and
- every word embedding stored as int8 rows with one float scale per row (symmetric, scale = max|row| / 127):
  :class:`Int8Embedding` for a plain ``nn.Embedding``, :class:`Int8BlockEmbedding` for a
  :class:`~kdkit.models.block_embedding.BlockEmbedding` (the factors U_b row-wise, V_b row-wise). A lookup gathers
  int8 rows and rescales only those; the dense matrix is never built.

:func:`state_bytes` is what a model takes on disk (its state dict, serialised), the size the int8 copy is reported
with beside the float model.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from kdkit.models.block_embedding import BlockEmbedding, BlockLogits


def quantize_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 rows: (q int8, scale float32 per row) with matrix ≈ q · scale[:, None]; |error| ≤ scale / 2."""
    matrix = matrix.detach().float()
    scale = matrix.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(matrix / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8), scale


class Int8Embedding(nn.Module):
    """An embedding table held as int8 rows and one scale per row; inference only."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None):
        super().__init__()
        q, scale = quantize_rows(weight)
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        self.num_embeddings, self.embedding_dim = q.shape
        self.padding_idx = padding_idx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.q[input_ids].float() * self.scale[input_ids].unsqueeze(-1)

    @property
    def weight(self) -> torch.Tensor:
        return self.q.float() * self.scale.unsqueeze(1)


class Int8BlockEmbedding(BlockEmbedding):
    """A :class:`BlockEmbedding` whose factors U_b and V_b are int8 rows with a scale per row; inference only."""

    def __init__(self, source: BlockEmbedding):
        super().__init__(source.block_sizes, source.ranks, source.embedding_dim, source.padding_idx)
        self.order.copy_(source.order)
        self.position.copy_(source.position)
        del self.us, self.vs
        for name, factors in (("u", source.us), ("v", source.vs)):
            for b, factor in enumerate(factors):
                q, scale = quantize_rows(factor)
                self.register_buffer(f"{name}{b}_q", q)
                self.register_buffer(f"{name}{b}_scale", scale)

    def u_rows(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"u{b}_q")[rows].float() * getattr(self, f"u{b}_scale")[rows].unsqueeze(-1)

    def _factor(self, name: str, b: int) -> torch.Tensor:
        return getattr(self, f"{name}{b}_q").float() * getattr(self, f"{name}{b}_scale").unsqueeze(1)

    def v_of(self, b: int) -> torch.Tensor:
        return self._factor("v", b)

    def factors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self._factor("u", b), self._factor("v", b)) for b in range(len(self.ranks))]


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` for CPU inference (the model itself is left as it is): linear layers dynamically
    quantised, word embeddings (plain or block-wise) as int8 rows. A tied output layer of a block embedding reads
    the int8 factors; a plain tied output layer (an ``nn.Linear``) is quantised as a linear layer."""
    model = copy.deepcopy(model).float().eval().cpu()
    embedding = model.get_input_embeddings()
    tied = isinstance(model.get_output_embeddings(), BlockLogits) if hasattr(model, "get_output_embeddings") \
        else False
    if isinstance(embedding, BlockEmbedding):
        new = Int8BlockEmbedding(embedding)
    elif isinstance(embedding, nn.Embedding):
        new = Int8Embedding(embedding.weight, embedding.padding_idx)
    else:
        raise ValueError(f"int8: the input embedding is a {type(embedding).__name__}, not an embedding table")
    model.set_input_embeddings(new)
    if tied:
        model.set_output_embeddings(BlockLogits(new))
    with warnings.catch_warnings():  # torch deprecates its quantised tensors in favour of torchao; they still work
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict serialised with ``torch.save`` (int8 packed weights count as int8)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
