import pytest
import torch
from torch import nn

from kdkit.models.block_embedding import BlockEmbedding, BlockLogits
from kdkit.models.int8 import Int8BlockEmbedding, Int8Embedding, quantize_int8, quantize_rows, state_bytes


def test_int8_rows_are_within_half_a_step_of_the_float_rows():
    matrix = torch.randn(50, 12) * torch.logspace(-3, 1, 50).unsqueeze(1)  # rows of very different scales
    q, scale = quantize_rows(matrix)
    assert q.dtype == torch.int8 and scale.shape == (50,)
    assert q.abs().max() == 127  # every row uses the whole range
    error = (q.float() * scale.unsqueeze(1) - matrix).abs()
    assert (error <= scale.unsqueeze(1) / 2 + 1e-7).all()
    assert not torch.equal(q.float() * scale.unsqueeze(1), matrix)  # it is a rounding, not a copy


def test_int8_embedding_lookup_and_weight():
    table = nn.Embedding(20, 8, padding_idx=0)
    int8 = Int8Embedding(table.weight, padding_idx=0)
    ids = torch.tensor([[1, 5, 19, 0]])
    assert torch.allclose(int8(ids), table(ids), atol=float(int8.scale.max()) / 2 + 1e-7)
    assert torch.allclose(int8.weight[ids], int8(ids))


def _blocks(seed: int = 0) -> BlockEmbedding:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(11, generator=g)
    us = [torch.randn(4, 2, generator=g), torch.randn(5, 3, generator=g), torch.randn(2, 1, generator=g)]
    vs = [torch.randn(2, 6, generator=g), torch.randn(3, 6, generator=g), torch.randn(1, 6, generator=g)]
    return BlockEmbedding.from_factors(order, us, vs)


def test_int8_block_embedding_matches_its_dequantised_factors():
    module = _blocks()
    int8 = Int8BlockEmbedding(module)
    ids = torch.tensor([[0, 3, 10, 7], [5, 5, 1, 2]])
    # the lookup gathers int8 rows: it equals the dense product of the dequantised factors exactly
    dense = torch.zeros(11, 6)
    dense[module.order] = torch.cat([u @ v for u, v in int8.factors()])
    assert torch.allclose(int8(ids), dense[ids], atol=1e-5)
    assert torch.allclose(int8.dense(), dense, atol=1e-5)
    # and stays close to the float factors (2 % of the values' scale)
    assert (int8(ids) - module(ids)).abs().max() < 0.02 * module(ids).abs().max()
    hidden = torch.randn(2, 6)
    assert torch.allclose(BlockLogits(int8)(hidden), hidden @ dense.T, atol=1e-4)
    assert not list(int8.parameters())  # buffers only: nothing to train
    assert all(t.dtype == torch.int8 for name, t in int8.state_dict().items() if name.endswith("_q"))


@pytest.mark.parametrize("compressed", [False, True])
def test_quantize_int8_keeps_the_predictions_and_shrinks_the_model(compressed):
    from transformers import BertConfig, BertForSequenceClassification

    from kdkit.students import embedding as ec

    torch.manual_seed(0)
    config = BertConfig(vocab_size=3000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    if compressed:
        matrix = ec.embedding_matrix(model)
        ec.replace_embedding(model, ec.compress_embedding(matrix, torch.rand(matrix.shape[0]) + 0.1,
                                                          budget=matrix.numel() // 4, n_blocks=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = quantize_int8(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the float model is untouched
    kind = Int8BlockEmbedding if compressed else Int8Embedding
    assert isinstance(int8.get_input_embeddings(), kind)
    assert not any(type(m) is nn.Linear for m in int8.modules())
    ids = torch.randint(1, config.vocab_size, (6, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = int8(input_ids=ids).logits, model(input_ids=ids).logits
    assert (ours - theirs).abs().max() < 0.1 * theirs.abs().max()
    # int8 weights: about a quarter of the float bytes (position embeddings, norms and scales stay float)
    assert state_bytes(int8) < 0.35 * state_bytes(model)


def test_quantize_int8_of_a_compressed_tied_causal_lm_reads_the_int8_factors(tmp_path):
    from transformers import AutoModelForCausalLM

    from kdkit.students import embedding as ec
    from tiny import make_tiny_lm

    model = AutoModelForCausalLM.from_pretrained(make_tiny_lm(tmp_path / "lm")).eval()
    matrix = ec.embedding_matrix(model)
    v, d = matrix.shape
    ec.replace_embedding(model, ec.compress_embedding(matrix, torch.rand(v) + 0.1, budget=(v + d) * 8, n_blocks=2))
    int8 = quantize_int8(model)
    embedding = int8.get_input_embeddings()
    assert isinstance(embedding, Int8BlockEmbedding)
    assert isinstance(int8.get_output_embeddings(), BlockLogits)
    assert int8.get_output_embeddings().embedding is embedding  # the output layer reads the int8 factors
    ids = torch.tensor([[3, 5, 7, 2, 9]])
    with torch.no_grad():
        ours, theirs = int8(ids).logits, model(ids).logits
    assert (ours - theirs).abs().max() < 0.1 * theirs.abs().max()
