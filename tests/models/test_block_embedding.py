import pytest
import torch

from kdkit.models.block_embedding import BlockEmbedding, BlockLogits


def _random_blocks(seed: int = 0) -> tuple[BlockEmbedding, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(11, generator=g)
    us = [torch.randn(4, 2, generator=g), torch.randn(5, 3, generator=g), torch.randn(2, 1, generator=g)]
    vs = [torch.randn(2, 6, generator=g), torch.randn(3, 6, generator=g), torch.randn(1, 6, generator=g)]
    module = BlockEmbedding.from_factors(order, us, vs)
    dense = torch.zeros(11, 6)
    dense[order] = torch.cat([u @ v for u, v in zip(us, vs)])
    return module, dense


def test_lookup_equals_the_dense_product():
    module, dense = _random_blocks()
    ids = torch.tensor([[0, 3, 10, 7], [5, 5, 1, 2]])
    assert torch.allclose(module(ids), dense[ids], atol=1e-6)
    assert torch.allclose(module.dense(), dense, atol=1e-6)


def test_tied_logits_equal_the_dense_product():
    module, dense = _random_blocks(1)
    hidden = torch.randn(2, 3, 6)
    assert torch.allclose(BlockLogits(module)(hidden), hidden @ dense.T, atol=1e-5)


def test_gradients_reach_only_the_blocks_looked_up():
    module, _ = _random_blocks(2)
    first_block_ids = module.order[:4]
    module(first_block_ids).sum().backward()
    assert module.us[0].grad.abs().sum() > 0 and module.vs[0].grad.abs().sum() > 0
    assert module.us[1].grad.abs().sum() == 0 and module.us[2].grad.abs().sum() == 0


def test_parameter_count_and_state_dict_round_trip():
    module, dense = _random_blocks(3)
    assert module.num_parameters() == 2 * (4 + 6) + 3 * (5 + 6) + 1 * (2 + 6)
    assert module.num_parameters() == sum(p.numel() for p in module.parameters())
    empty = BlockEmbedding(module.block_sizes, module.ranks, 6)
    empty.load_state_dict(module.state_dict())
    assert torch.allclose(empty.dense(), dense, atol=1e-6)


@pytest.mark.parametrize("sizes, ranks", [([3, 2], [1]), ([3, 2], [4, 1]), ([3, 0], [1, 1]), ([3, 2], [0, 1])])
def test_bad_shapes_are_refused(sizes, ranks):
    with pytest.raises(ValueError):
        BlockEmbedding(sizes, ranks, 6)


def test_order_must_be_a_permutation():
    with pytest.raises(ValueError, match="every vocabulary id once"):
        BlockEmbedding.from_factors(torch.tensor([0, 0, 1]), [torch.ones(3, 1)], [torch.ones(1, 4)])
