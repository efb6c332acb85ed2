"""Compressing a word-embedding matrix into low-rank blocks by word importance (GroupReduce, Chen et al. NeurIPS
2018; DiscBlock, Lee et al. Findings EMNLP 2021; SPEC.md §9).

The steps, each a function here:

1. importance of every vocabulary id: :func:`frequency_scores` (GroupReduce), :func:`tfidf_scores` (DiscBlock's
   augmented TF-IDF over the task corpus) or :func:`gate_scores` (DiscBlock's differentiable importance: per-word
   gates trained with the task loss under a sparsity target);
2. blocks: :func:`kmeans_blocks`, 1-D k-means on the log-scores (scores span orders of magnitude, so clusters on the
   raw values put nearly every word in one block), block 0 the most important;
3. ranks: :func:`allocate_ranks`, r_b ∝ the block's mean score, scaled to the largest total that fits a parameter
   budget;
4. per block, the weighted low-rank factorisation :func:`weighted_factors`:
   min ‖Q^{1/2}(E_b − U_b V_b)‖_F with Q = diag(scores of the block's words), solved by the SVD of Q^{1/2} E_b;
5. optionally GroupReduce's refinement :func:`refine_blocks`: each word moves to the block whose basis reconstructs it
   best, ranks are re-allocated and the blocks re-factorised.

:func:`compress_embedding` runs them and returns a :class:`~kdkit.models.block_embedding.BlockEmbedding`;
:func:`svd_embedding` is the plain truncated-SVD baseline (one block, unweighted); :func:`replace_embedding` puts a
compressed embedding into a model (and its tied output layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from kdkit.models import block_embedding as block_module
from kdkit.models.block_embedding import BlockEmbedding, BlockLogits, block_spec


# --- importance ------------------------------------------------------------------------------------------------------
def frequency_scores(documents: Iterable[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """GroupReduce's importance: how often each id occurs in ``documents`` (lists of token ids), plus one so every
    word keeps a positive weight."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for ids in documents:
        counts += torch.bincount(torch.as_tensor(list(ids), dtype=torch.long), minlength=vocab_size)[:vocab_size]
    return counts


def tfidf_scores(documents: Sequence[Sequence[int]], vocab_size: int, alpha: float = 0.5,
                 beta: float = 0.5) -> torch.Tensor:
    """DiscBlock's importance, TF-IDF over the task corpus: score_w = tf̄_w · idf_w with

    tf̄_w = α + β/N · Σ_d tf_{w,d} / max_w' tf_{w',d},   idf_w = max(log(N / (df_w + 2)), 0) + 1

    over the N ``documents`` (lists of token ids); tf_{w,d} counts w in d and df_w the documents holding w.
    """
    n = len(documents)
    if n == 0:
        raise ValueError("TF-IDF scores need at least one document")
    tf_sum = torch.zeros(vocab_size, dtype=torch.float64)
    df = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in documents:
        counts = torch.bincount(torch.as_tensor(list(ids), dtype=torch.long), minlength=vocab_size)[:vocab_size]
        counts = counts.double()
        if counts.max() > 0:
            tf_sum += counts / counts.max()
        df += (counts > 0).double()
    tf = alpha + beta / n * tf_sum
    idf = torch.clamp(torch.log(n / (df + 2)), min=0) + 1
    return tf * idf


def gate_scores(model: nn.Module, batches: Iterator[dict], loss: Callable[[dict], torch.Tensor],
                seen: torch.Tensor, steps: int, target: float = 0.5, weight: float = 10.0, lr: float = 0.1,
                init: float = 0.9) -> torch.Tensor:
    """The differentiable importance: a gate g_w = σ(θ_w) scales each word's embedding row, and θ alone is trained
    (the model frozen, in eval mode) for ``steps`` batches on

        L = task loss(batch) + ``weight`` · (mean_{w seen} g_w − ``target``)²

    from g_w = ``init``: the penalty pulls every gate down alike, the task loss holds up the words it needs, so
    after training g_w ranks words by what the task loses without them. ``seen`` (V,) marks the words of the
    training texts; the others get the smallest trained gate. Returns the gates (V,), all positive."""
    vocab_size = seen.shape[0]
    theta = nn.Parameter(torch.full((vocab_size,), math.log(init / (1 - init))))
    embedding = model.get_input_embeddings()

    def scale(module, inputs, output):
        return output * torch.sigmoid(theta)[inputs[0]].unsqueeze(-1).to(output.dtype)

    hook = embedding.register_forward_hook(scale)
    trainable = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    optimiser = torch.optim.Adam([theta], lr=lr)
    try:
        for _ in range(steps):
            penalty = weight * (torch.sigmoid(theta)[seen].mean() - target) ** 2
            total = loss(next(batches)) + penalty
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
    finally:
        hook.remove()
        for parameter, flag in zip(model.parameters(), trainable):
            parameter.requires_grad_(flag)
        model.train(was_training)
    gates = torch.sigmoid(theta.detach()).double()
    gates[~seen] = gates[seen].min()
    return gates


# --- blocks and ranks ------------------------------------------------------------------------------------------------
def kmeans_blocks(scores: torch.Tensor, n_blocks: int, seed: int = 0) -> torch.Tensor:
    """Block of every id (V,) by 1-D k-means on log(scores) (scikit-learn's ``KMeans``); block 0 has the highest
    mean score. Fewer blocks come back when the scores take fewer distinct values."""
    try:
        from sklearn.cluster import KMeans
    except ImportError as error:  # the optional extra
        raise ImportError("block-wise embedding compression needs scikit-learn: pip install 'kdkit[compress]'") \
            from error
    if (scores <= 0).any():
        raise ValueError("importance scores must be positive")
    values = torch.log(scores.double()).numpy().reshape(-1, 1)
    k = min(n_blocks, len(set(values.ravel().tolist())))
    labels = torch.as_tensor(KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(values))
    means = torch.stack([scores[labels == b].double().mean() for b in range(k)])
    rank_of = torch.empty(k, dtype=torch.long)
    rank_of[means.argsort(descending=True)] = torch.arange(k)
    return rank_of[labels]


def block_parameters(sizes: Sequence[int], ranks: Sequence[int], dim: int) -> int:
    return sum(r * (n + dim) for n, r in zip(sizes, ranks))


def allocate_ranks(sizes: Sequence[int], importance: Sequence[float], dim: int, budget: int) -> list[int]:
    """Ranks r_b ∝ ``importance[b]`` (clipped to [1, min(n_b, d)]) at the largest scale whose factors
    Σ_b r_b (n_b + d) fit ``budget`` parameters; ``ValueError`` when even rank 1 everywhere does not fit."""
    caps = [min(n, dim) for n in sizes]
    top = max(importance)
    if top <= 0:
        raise ValueError("block importances must be positive")

    def ranks_at(scale: float) -> list[int]:
        return [max(1, min(cap, math.ceil(scale * w / top))) for cap, w in zip(caps, importance)]

    if block_parameters(sizes, ranks_at(0.0), dim) > budget:
        raise ValueError(f"a budget of {budget} parameters cannot hold rank 1 for each of {len(sizes)} blocks "
                         f"({block_parameters(sizes, ranks_at(0.0), dim)} needed)")
    low, high = 0.0, float(max(caps)) * top / min(w for w in importance if w > 0)
    if block_parameters(sizes, ranks_at(high), dim) <= budget:
        return ranks_at(high)
    for _ in range(60):  # bisection on the scale; the ranks are integers, so this settles long before 60 halvings
        middle = (low + high) / 2
        if block_parameters(sizes, ranks_at(middle), dim) <= budget:
            low = middle
        else:
            high = middle
    return ranks_at(low)


# --- factorisation ---------------------------------------------------------------------------------------------------
def weighted_factors(matrix: torch.Tensor, weights: torch.Tensor | None, rank: int) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """(U, V) of rank ``rank`` minimising ‖Q^{1/2}(E − U V)‖_F, Q = diag(``weights``) over E's rows.

    With the SVD Q^{1/2} E = A S Bᵀ the minimiser is U = Q^{-1/2} A_r S_r = E B_r and V = B_rᵀ: the row weights choose
    the basis V; each row is then its own projection onto it. ``weights=None`` is the plain truncated SVD.
    """
    e = matrix.double()
    scaled = e if weights is None else e * weights.double().sqrt().unsqueeze(1)
    _, _, vh = torch.linalg.svd(scaled, full_matrices=False)
    v = vh[:rank]
    return (e @ v.T).to(matrix.dtype), v.to(matrix.dtype)


def weighted_error(matrix: torch.Tensor, weights: torch.Tensor | None, u: torch.Tensor, v: torch.Tensor) -> float:
    """‖Q^{1/2}(E − U V)‖_F² (Q = I when ``weights`` is None)."""
    residual = (matrix.double() - u.double() @ v.double()).pow(2).sum(1)
    return float(residual.sum() if weights is None else (weights.double() * residual).sum())


def _factorise(matrix: torch.Tensor, scores: torch.Tensor, blocks: torch.Tensor, ranks: Sequence[int],
               padding_idx: int | None) -> BlockEmbedding:
    order = torch.cat([torch.nonzero(blocks == b).squeeze(1) for b in range(len(ranks))])
    us, vs = [], []
    for b, rank in enumerate(ranks):
        ids = torch.nonzero(blocks == b).squeeze(1)
        u, v = weighted_factors(matrix[ids], scores[ids], rank)
        us.append(u)
        vs.append(v)
    return BlockEmbedding.from_factors(order, us, vs, padding_idx=padding_idx)


def _block_ranks(scores: torch.Tensor, blocks: torch.Tensor, dim: int, budget: int) -> list[int]:
    n_blocks = int(blocks.max()) + 1
    sizes = [int((blocks == b).sum()) for b in range(n_blocks)]
    importance = [float(scores[blocks == b].double().mean()) for b in range(n_blocks)]
    return allocate_ranks(sizes, importance, dim, budget)


def refine_blocks(matrix: torch.Tensor, scores: torch.Tensor, blocks: torch.Tensor, budget: int,
                  iterations: int = 1) -> torch.Tensor:
    """GroupReduce's refinement: factorise every block, move each word to the block whose basis V_b reconstructs
    it best (least ‖e_w − e_w V_bᵀ V_b‖²), re-allocate ranks to the budget and repeat ``iterations`` times; a block
    is never emptied."""
    blocks = blocks.clone()
    e = matrix.double()
    for _ in range(iterations):
        ranks = _block_ranks(scores, blocks, matrix.shape[1], budget)
        errors = []
        for b, rank in enumerate(ranks):
            ids = torch.nonzero(blocks == b).squeeze(1)
            _, v = weighted_factors(matrix[ids], scores[ids], rank)
            v = v.double()
            errors.append((e - e @ v.T @ v).pow(2).sum(1))
        moved = torch.stack(errors, 1).argmin(1)
        for b in range(len(ranks)):  # keep the word of each block that it reconstructs best, so none empties
            if not (moved == b).any():
                ids = torch.nonzero(blocks == b).squeeze(1)
                moved[ids[errors[b][ids].argmin()]] = b
        if torch.equal(moved, blocks):
            break
        blocks = moved
    return blocks


def compress_embedding(matrix: torch.Tensor, scores: torch.Tensor, budget: int, n_blocks: int = 4,
                       refine: int = 0, seed: int = 0, padding_idx: int | None = None) -> BlockEmbedding:
    """The block-wise compression of ``matrix`` (V × d) under ``budget`` parameters: blocks by k-means on the
    log-scores, ranks ∝ block score to the budget, weighted SVD per block (Q = the scores), then ``refine`` rounds
    of GroupReduce's refinement."""
    if scores.shape != (matrix.shape[0],):
        raise ValueError(f"one score per row: {tuple(scores.shape)} scores for {matrix.shape[0]} rows")
    blocks = kmeans_blocks(scores, n_blocks, seed)
    if refine:
        blocks = refine_blocks(matrix, scores, blocks, budget, refine)
    ranks = _block_ranks(scores, blocks, matrix.shape[1], budget)
    return _factorise(matrix, scores, blocks, ranks, padding_idx)


def svd_embedding(matrix: torch.Tensor, budget: int, padding_idx: int | None = None) -> BlockEmbedding:
    """The baseline: one block, the plain truncated SVD at the largest rank that fits ``budget`` parameters."""
    v, d = matrix.shape
    rank = min(budget // (v + d), v, d)
    if rank < 1:
        raise ValueError(f"a budget of {budget} parameters cannot hold a rank-1 factorisation of {v} x {d}")
    u, vh = weighted_factors(matrix, None, rank)
    return BlockEmbedding.from_factors(torch.arange(v), [u], [vh], padding_idx=padding_idx)


# --- students --------------------------------------------------------------------------------------------------------
def compress_student(model: nn.Module, tokenizer, texts: Sequence[str], cfg, seed: int = 0,
                     scores: torch.Tensor | None = None) -> BlockEmbedding:
    """Replace ``model``'s word embedding by its block-wise compression as ``cfg`` (the recipe's
    ``student.embedding``) says, the importance counted over ``texts`` tokenised as the model reads them (special
    tokens included), or given as ``scores`` (the differentiable method's gates); the new embedding."""
    matrix = embedding_matrix(model)
    v, d = matrix.shape
    budget = cfg.parameters or int(cfg.fraction * v * d)
    old = model.get_input_embeddings()
    padding_idx = getattr(old, "padding_idx", None)
    if cfg.method == "svd":
        embedding = svd_embedding(matrix, budget, padding_idx)
    elif scores is not None:
        embedding = compress_embedding(matrix, scores, budget, cfg.blocks, cfg.refine, seed, padding_idx)
    else:
        documents = tokenizer(list(texts), truncation=False)["input_ids"]
        if cfg.method not in ("frequency", "tfidf"):
            raise ValueError(f"the {cfg.method} importance needs its scores computed first")
        scores = frequency_scores(documents, v) if cfg.method == "frequency" else \
            tfidf_scores(documents, v, cfg.tfidf_alpha, cfg.tfidf_beta)
        embedding = compress_embedding(matrix, scores, budget, cfg.blocks, cfg.refine, seed, padding_idx)
    replace_embedding(model, embedding)
    return embedding


# --- models ----------------------------------------------------------------------------------------------------------
def embedding_matrix(model: nn.Module) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def tied_output(model: nn.Module) -> bool:
    """Whether the model's output layer shares the input embedding's matrix (causal LMs such as SmolLM2)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return output is not None and getattr(output, "weight", None) is model.get_input_embeddings().weight


def replace_embedding(model: nn.Module, embedding: BlockEmbedding) -> nn.Module:
    """Put ``embedding`` in place of the model's input embedding, and in place of a tied output layer; the model
    stops re-tying weights on load (``tie_word_embeddings`` off: the output layer reads the same factors)."""
    old = model.get_input_embeddings()
    if (embedding.num_embeddings, embedding.embedding_dim) != tuple(old.weight.shape):
        raise ValueError(f"the compressed embedding is {embedding.num_embeddings} x {embedding.embedding_dim}, "
                         f"the model's {tuple(old.weight.shape)}")
    tied = tied_output(model)
    embedding.to(device=old.weight.device, dtype=old.weight.dtype)
    model.set_input_embeddings(embedding)
    if tied:
        model.set_output_embeddings(BlockLogits(embedding))
        model.config.tie_word_embeddings = False  # nothing left to re-tie: both layers read the one set of factors
    model.config.block_embedding = block_spec(embedding, tied)
    return model


_MODELLING = '''"""{base} with a block-wise low-rank word embedding (written by kdkit, module in block_embedding.py)."""

from transformers import {base} as _Base

from .block_embedding import install_blocks


class {name}(_Base):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        install_blocks(self, config.block_embedding)
'''


_AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForSeq2SeqLM",
                 "AutoModelForMaskedLM", "AutoModel")


def auto_class_name(model: nn.Module) -> str:
    """The transformers Auto class whose mapping holds the model's class (``AutoModelForCausalLM`` for
    ``LlamaForCausalLM``)."""
    import transformers

    for name in _AUTO_CLASSES:
        mapping = getattr(transformers, name)._model_mapping
        if type(model) in mapping.values():
            return name
    raise ValueError(f"{type(model).__name__} is not a class of transformers' Auto classes {_AUTO_CLASSES}")


def save_with_code(model: nn.Module, folder, auto_class: str | None = None) -> None:
    """``model.save_pretrained(folder)`` plus the modelling code that lets plain transformers load a model with a
    compressed embedding: ``AutoX.from_pretrained(folder, trust_remote_code=True)`` for ``auto_class`` ``AutoX``
    (``config.auto_map``; found from the model's class when not given). A model without one is saved as it is."""
    from pathlib import Path

    spec = getattr(model.config, "block_embedding", None)
    if spec is None:
        model.save_pretrained(folder)
        return
    auto_class = auto_class or auto_class_name(model)
    base = type(model).__name__
    name = f"Block{base}"
    model.config.auto_map = {auto_class: f"modeling_block_embedding.{name}"}
    model.save_pretrained(folder)
    folder = Path(folder)
    (folder / "block_embedding.py").write_text(Path(block_module.__file__).read_text())
    (folder / "modeling_block_embedding.py").write_text(_MODELLING.format(base=base, name=name))
