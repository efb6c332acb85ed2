"""The BiLSTM student model: shapes, padding invariance, hidden states for capture, Auto-class round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

import kdkit  # noqa: F401  (registers kdkit-bilstm with the Auto classes)
from kdkit.capture import Capture, hidden_size, num_layers
from kdkit.models import BiLSTMConfig, BiLSTMForSequenceClassification
from kdkit.students import find_layers


def make(**kwargs) -> BiLSTMForSequenceClassification:
    torch.manual_seed(0)
    shape = dict(vocab_size=20, embedding_size=8, hidden_size=12, num_hidden_layers=2, num_labels=3, dropout=0.0)
    return BiLSTMForSequenceClassification(BiLSTMConfig(**{**shape, **kwargs})).eval()


def batch():
    ids = torch.tensor([[2, 5, 6, 7, 0, 0], [2, 8, 9, 10, 11, 12]])
    return ids, (ids != 0).long()


def test_forward_shapes_and_hidden_states():
    model = make()
    ids, mask = batch()
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 2]), output_hidden_states=True)
    assert out.logits.shape == (2, 3)
    assert len(out.hidden_states) == 3
    assert all(h.shape == (2, 6, 12) for h in out.hidden_states)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model(ids, attention_mask=mask).hidden_states is None


@pytest.mark.parametrize("pooling", ["max", "mean", "cls"])
def test_padding_never_changes_real_tokens(pooling):
    model = make(pooling=pooling)
    ids, mask = batch()
    short = model(ids[:1, :4], attention_mask=mask[:1, :4], output_hidden_states=True)
    padded = model(ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(padded.logits[:1], short.logits)
    for s, p in zip(short.hidden_states, padded.hidden_states):
        torch.testing.assert_close(p[:1, :4], s)
        assert p[0, 4:].abs().sum() == 0  # padding positions are 0 in every hidden state
    # left padding gives the same real-token outputs as right padding
    left = model(torch.tensor([[0, 0, 2, 5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]),
                 output_hidden_states=True)
    torch.testing.assert_close(left.logits, short.logits)
    torch.testing.assert_close(left.hidden_states[-1][:, 2:], short.hidden_states[-1])


def test_padding_token_values_do_not_matter_and_empty_rows_are_finite():
    model = make()
    ids, mask = batch()
    noisy = ids.clone()
    noisy[0, 4:] = 13  # a real word id under the padding mask
    torch.testing.assert_close(model(noisy, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    out = model(ids, attention_mask=torch.zeros_like(mask), output_hidden_states=True)
    assert torch.isfinite(out.logits).all() and out.hidden_states[-1].abs().sum() == 0


def test_gradients_reach_every_layer():
    model = make(embedding_size=12)  # no projection: embeddings feed the first LSTM directly
    assert isinstance(model.embedding_projection, torch.nn.Identity)
    ids, mask = batch()
    model(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n != "embeddings.weight")


def test_capture_and_shape_helpers_see_the_layers():
    model = make()
    ids, mask = batch()
    reps = Capture(model, hidden_states=True, modules=["layers.1"])(input_ids=ids, attention_mask=mask)
    assert num_layers(model) == 2 and hidden_size(model) == 12
    assert len(reps.hidden_states) == num_layers(model) + 1
    assert reps.pooled(2, "mean").shape == (2, 12)
    assert find_layers(model)[2] is model.layers
    with pytest.raises(ValueError, match="no attention"):
        model(ids, attention_mask=mask, output_attentions=True)


def test_config_rejects_bad_shapes():
    with pytest.raises(Exception, match="even"):
        BiLSTMConfig(hidden_size=7)
    with pytest.raises(Exception, match="pooling"):
        BiLSTMConfig(pooling="last")


def test_save_and_load_through_auto_classes(tmp_path):
    model = make(pooling="mean", id2label={0: "a", 1: "b", 2: "c"})
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "kdkit-bilstm"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BiLSTMForSequenceClassification)
    assert loaded.config.pooling == "mean" and loaded.config.id2label[2] == "c"
    ids, mask = batch()
    torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
