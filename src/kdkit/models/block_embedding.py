"""Block-wise low-rank word embeddings (GroupReduce, Chen et al. NeurIPS 2018; DiscBlock, Lee et al. Findings EMNLP
2021).

The vocabulary is split into blocks B_1 … B_K; the rows of the embedding matrix E (V × d) that belong to block b are
stored as the product U_b V_b, U_b of shape (n_b × r_b) and V_b of shape (r_b × d), so the matrix costs
Σ_b r_b (n_b + d) parameters instead of V·d. A lookup gathers the rows of U_b and multiplies by V_b without building E;
a tied output layer (causal LMs) computes the logits from the same factors, h E^T = [h V_b^T U_b^T]_b.

This file imports torch only, so an exported model folder can carry it as its modelling code.
"""

from __future__ import annotations

import torch
from torch import nn


class BlockEmbedding(nn.Module):
    """An embedding whose rows are stored per block as low-rank factors.

    ``order`` (V,) lists the vocabulary ids block after block (block b holds positions ``offsets[b]`` to
    ``offsets[b + 1]`` of it); ``us[b]`` (n_b × r_b) and ``vs[b]`` (r_b × d) are its factors. Built empty from the
    block sizes and ranks (the shape a state dict fills) or from factors with :meth:`from_factors`.
    """

    def __init__(self, block_sizes: list[int], ranks: list[int], embedding_dim: int,
                 padding_idx: int | None = None):
        super().__init__()
        if len(block_sizes) != len(ranks) or not block_sizes:
            raise ValueError(f"one rank per block: {len(block_sizes)} blocks, {len(ranks)} ranks")
        if any(n < 1 for n in block_sizes) or any(r < 1 or r > min(n, embedding_dim)
                                                 for n, r in zip(block_sizes, ranks)):
            raise ValueError(f"each block needs 1 <= rank <= min(its size, {embedding_dim}); "
                             f"sizes {block_sizes}, ranks {ranks}")
        self.block_sizes, self.ranks = list(block_sizes), list(ranks)
        self.num_embeddings, self.embedding_dim, self.padding_idx = sum(block_sizes), embedding_dim, padding_idx
        self.us = nn.ParameterList(nn.Parameter(torch.zeros(n, r)) for n, r in zip(block_sizes, ranks))
        self.vs = nn.ParameterList(nn.Parameter(torch.zeros(r, embedding_dim)) for r in ranks)
        offsets = torch.tensor([0, *block_sizes]).cumsum(0)
        self.register_buffer("offsets", offsets)
        self.register_buffer("order", torch.arange(self.num_embeddings))
        self.register_buffer("position", torch.arange(self.num_embeddings))

    @classmethod
    def from_factors(cls, order: torch.Tensor, us: list[torch.Tensor], vs: list[torch.Tensor],
                     padding_idx: int | None = None) -> "BlockEmbedding":
        """The embedding of vocabulary ids ``order`` (block after block) with block factors ``us``/``vs``."""
        module = cls([u.shape[0] for u in us], [u.shape[1] for u in us], vs[0].shape[1], padding_idx)
        if sorted(order.tolist()) != list(range(module.num_embeddings)):
            raise ValueError("order must list every vocabulary id once")
        with torch.no_grad():
            for param, value in zip([*module.us, *module.vs], [*us, *vs]):
                param.copy_(value)
            module.order.copy_(order)
            module.position[order] = torch.arange(len(order))
        return module

    def num_parameters(self) -> int:
        return sum(r * (n + self.embedding_dim) for n, r in zip(self.block_sizes, self.ranks))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # every block's factors are applied to every id under a mask (K small products, no data-dependent shapes),
        # so the lookup traces for ONNX and keeps gradients for each block's factors
        positions = self.position[input_ids]
        out = None
        for b in range(len(self.ranks)):
            v = self.v_of(b)
            start = self.offsets[b]
            inside = (positions >= start) & (positions < self.offsets[b + 1])
            rows = torch.where(inside, positions - start, torch.zeros_like(positions))
            part = (self.u_rows(b, rows) @ v) * inside.unsqueeze(-1).to(v.dtype)
            out = part if out is None else out + part
        return out

    def u_rows(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` of block ``b``'s U_b (a lookup gathers only these)."""
        return self.us[b][rows]

    def v_of(self, b: int) -> torch.Tensor:
        """Block ``b``'s V_b."""
        return self.vs[b]

    def factors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(U_b, V_b) of every block."""
        return list(zip(self.us, self.vs))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` (…, d) times the embedding's transpose: (…, V) in vocabulary order."""
        parts = [(hidden @ v.T) @ u.T for u, v in self.factors()]
        return torch.cat(parts, dim=-1).index_select(-1, self.position)

    def dense(self) -> torch.Tensor:
        """The (V × d) matrix the factors stand for (for checks and reports; never needed by forward)."""
        return torch.cat([u @ v for u, v in self.factors()]).index_select(0, self.position)

    @property
    def weight(self) -> torch.Tensor:
        # code that reads an input embedding's weight for its dtype, device or shape keeps working
        return self.dense()

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, blocks={self.block_sizes}, ranks={self.ranks}, "
                f"parameters={self.num_parameters()}")


class BlockLogits(nn.Module):
    """A causal LM's output layer tied to a :class:`BlockEmbedding`: logits = h E^T from the embedding's factors.

    The embedding is held by reference, not as a sub-module: its factors are the input embedding's parameters, so
    they are listed, moved and saved once, under the input embedding's name.
    """

    def __init__(self, embedding: BlockEmbedding):
        super().__init__()
        self._tied = [embedding]  # a list hides it from nn.Module's registration

    @property
    def embedding(self) -> BlockEmbedding:
        return self._tied[0]

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.dense()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.embedding.logits(hidden)


def block_spec(embedding: BlockEmbedding, tied: bool) -> dict:
    """What a model config records so :func:`install_blocks` can rebuild the shapes before the weights load."""
    return {"block_sizes": embedding.block_sizes, "ranks": embedding.ranks, "embedding_dim": embedding.embedding_dim,
            "padding_idx": embedding.padding_idx, "tied_output": tied}


def install_blocks(model: nn.Module, spec: dict) -> nn.Module:
    """Give ``model`` an empty :class:`BlockEmbedding` of ``spec``'s shapes (and the tied output layer): what an
    exported model's class does in ``__init__`` before ``from_pretrained`` fills the factors."""
    embedding = BlockEmbedding(spec["block_sizes"], spec["ranks"], spec["embedding_dim"], spec.get("padding_idx"))
    model.set_input_embeddings(embedding)
    if spec.get("tied_output"):
        model.set_output_embeddings(BlockLogits(embedding))
    return model
