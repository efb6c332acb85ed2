import pytest
import torch

from kdkit.errors import ConfigError, ModelError
from kdkit.losses import reduce_loss
from kdkit.losses._reduce import check_same_shape, kl_last_axis, pair_mask

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_token_values_by_hand():
    # valid: 1, 2 | 4 | none  -> 3 valid tokens summing to 7
    assert reduce_loss(VALUES, MASK, "sum").item() == pytest.approx(7.0)
    assert reduce_loss(VALUES, MASK, "mean").item() == pytest.approx(7.0 / 3)
    assert reduce_loss(VALUES, MASK, "none").tolist() == pytest.approx([1.5, 4.0, 0.0])


def test_without_mask_everything_counts():
    assert reduce_loss(VALUES, None, "mean").item() == pytest.approx(5.0)
    assert reduce_loss(VALUES, None, "none").tolist() == pytest.approx([2.0, 5.0, 8.0])


def test_per_sample_values():
    values = torch.tensor([1.0, 2.0, 6.0])
    assert reduce_loss(values).item() == pytest.approx(3.0)
    assert reduce_loss(values, reduction="sum").item() == pytest.approx(9.0)
    assert torch.equal(reduce_loss(values, reduction="none"), values)
    assert reduce_loss(values, torch.tensor([1, 0, 1])).item() == pytest.approx(3.5)


def test_pair_values_with_pair_mask():
    values = torch.arange(8.0).view(2, 2, 2)
    mask = pair_mask(torch.tensor([[1, 1], [1, 0]]), 2, 2, values.device)
    # sample 0: all of 0,1,2,3; sample 1: only (0, 0) -> 4
    assert reduce_loss(values, mask, "none").tolist() == pytest.approx([1.5, 4.0])
    assert reduce_loss(values, mask, "mean").item() == pytest.approx(10.0 / 5)


def test_padding_content_never_leaks():
    values = VALUES.clone().requires_grad_()
    poisoned = torch.where(MASK.bool(), values, torch.tensor(float("nan")))
    loss = reduce_loss(poisoned, MASK, "mean")
    loss.backward()
    assert loss.item() == pytest.approx(7.0 / 3)
    assert torch.isfinite(values.grad).all()
    assert (values.grad[~MASK.bool()] == 0).all()


def test_all_padding_gives_zero_not_nan():
    mask = torch.zeros(3, 3)
    for reduction in ("mean", "sum", "none"):
        out = reduce_loss(VALUES, mask, reduction)
        assert torch.isfinite(out).all() and (out == 0).all()


def test_unknown_reduction_names_value():
    with pytest.raises(ConfigError, match="reduction 'avg' is not one of mean, sum, none"):
        reduce_loss(VALUES, None, "avg")


def test_pair_mask_excludes_padded_queries_and_keys():
    mask = pair_mask(torch.tensor([[1, 1, 0]]), 1, 3, torch.device("cpu"))
    assert mask.int().tolist() == [[[1, 1, 0], [1, 1, 0], [0, 0, 0]]]
    assert pair_mask(None, 2, 3, torch.device("cpu")).all()


def test_kl_last_axis_by_hand():
    p_t = torch.tensor([0.75, 0.25])
    p_s = torch.tensor([0.5, 0.5])
    # 0.75 ln 1.5 + 0.25 ln 0.5
    assert kl_last_axis(p_t.log(), p_s.log()).item() == pytest.approx(0.130812, abs=1e-6)
    assert kl_last_axis(p_t.log(), p_s.log(), torch.tensor([True, False])).item() == pytest.approx(0.304099, abs=1e-6)


def test_check_same_shape():
    with pytest.raises(ModelError, match=r"kl: student shape \(2, 3\) does not match teacher shape \(2, 4\)"):
        check_same_shape("kl", torch.zeros(2, 3), torch.zeros(2, 4))
