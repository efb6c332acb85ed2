"""DynaBERT surgery: importance, rewiring, sub-networks and their export (kdkit.students.adaptive)."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from kdkit.errors import ModelError
from kdkit.students import adaptive
from tiny import make_tiny_teacher

GRID = [(w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("adaptive") / "teacher", layers=4)


def _model(folder, dtype=torch.float32):
    return BertForSequenceClassification.from_pretrained(folder).to(dtype).eval()


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 24, (4, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


def _logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_depth_rule_follows_dynabert():
    assert adaptive.kept_layers(6, 1.0) == [0, 1, 2, 3, 4, 5]
    assert adaptive.kept_layers(6, 0.5) == [0, 2, 4]
    assert adaptive.kept_layers(6, 0.75) == [0, 1, 2, 4, 5]
    assert adaptive.kept_layers(12, 0.75) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    with pytest.raises(ValueError, match="depth multiplier"):
        adaptive.kept_layers(6, 0.0)


def test_width_sizes(folder):
    model = _model(folder)  # 4 heads, 37 neurons
    assert adaptive.width_sizes(model, 1.0) == (4, 37)
    assert adaptive.width_sizes(model, 0.5) == (2, 19)
    assert adaptive.width_sizes(model, 0.25) == (1, 10)
    with pytest.raises(ValueError, match="width multiplier"):
        adaptive.width_sizes(model, 1.5)


def test_head_importance_is_the_gate_gradient(folder):
    """|∂L/∂ξ_h| against a central finite difference of the loss in the head's output scale (float64)."""
    model, batch = _model(folder, torch.float64), _batch()
    heads, _ = adaptive.head_neuron_importance(model, [batch])
    layer, head = 2, 1
    attention = model.bert.encoder.layer[layer].attention.self
    size = attention.attention_head_size

    def loss_at(scale):
        def hook(module, args, output):
            gate = torch.ones(output[0].shape[-1], dtype=output[0].dtype)
            gate[head * size:(head + 1) * size] = scale
            return (output[0] * gate, *output[1:])
        handle = attention.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model(**batch).loss.item()
        finally:
            handle.remove()

    eps = 1e-4
    numeric = abs(loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)
    assert heads[layer, head].item() == pytest.approx(numeric, rel=1e-4)
    assert heads.shape == (4, 4) and (heads > 0).all()


def test_neuron_importance_is_dynabert_taylor_term(folder):
    """Σ W1·∂W1 + b1·∂b1 is ∂L/∂s for the neuron's input weights scaled by s; likewise W2's column: both checked by
    finite differences (float64), and their absolute values sum to the importance."""
    model, batch = _model(folder, torch.float64), _batch(1)
    _, neurons = adaptive.head_neuron_importance(model, [batch])
    layer, j = 1, 5
    block = model.bert.encoder.layer[layer]

    def derivative(scale_rows: bool):
        def loss_at(s):
            w1, b1, w2 = (block.intermediate.dense.weight, block.intermediate.dense.bias, block.output.dense.weight)
            saved = (w1[j].clone(), b1[j].clone(), w2[:, j].clone())
            with torch.no_grad():
                if scale_rows:
                    w1[j] *= s
                    b1[j] *= s
                else:
                    w2[:, j] *= s
                loss = model(**batch).loss.item()
                w1[j], b1[j], w2[:, j] = saved
            return loss
        eps = 1e-4
        return (loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)

    expected = abs(derivative(True)) + abs(derivative(False))
    assert neurons[layer, j].item() == pytest.approx(expected, rel=1e-4)


def test_importance_leaves_gradients_and_weights(folder):
    model, batch = _model(folder), _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    marker = torch.full_like(model.classifier.weight, 3.0)
    model.classifier.weight.grad = marker.clone()
    adaptive.head_neuron_importance(model, [batch])
    assert torch.equal(model.classifier.weight.grad, marker)
    assert model.bert.encoder.layer[0].intermediate.dense.weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_rewiring_keeps_the_function_and_sorts_importance(folder):
    model, batch = _model(folder), _batch()
    reference = _logits(model, batch)
    heads, neurons = adaptive.head_neuron_importance(model, [batch, _batch(1)])
    query = model.bert.encoder.layer[0].attention.self.query.weight.clone()
    adaptive.rewire(model, heads, neurons)
    assert torch.allclose(_logits(model, batch), reference, atol=1e-6, rtol=1e-5)
    order = torch.sort(heads[0], descending=True, stable=True).indices
    if not torch.equal(order, torch.arange(4)):
        assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, query)
    again_heads, again_neurons = adaptive.head_neuron_importance(model, [batch, _batch(1)])
    assert torch.allclose(again_heads, torch.sort(heads, dim=1, descending=True).values, rtol=1e-3, atol=1e-9)
    assert torch.allclose(again_neurons, torch.sort(neurons, dim=1, descending=True).values, rtol=1e-3, atol=1e-9)


def test_rewire_refuses_scores_of_another_shape(folder):
    with pytest.raises(ValueError, match="do not match"):
        adaptive.rewire(_model(folder), torch.ones(4, 3), torch.ones(4, 37))


def test_sub_network_trains_the_shared_slice_and_restores(folder):
    model, batch = _model(folder), _batch()
    reference = _logits(model, batch)
    with adaptive.sub_network(model, 0.5, 0.5):
        assert len(model.bert.encoder.layer) == 2
        model(**batch).loss.backward()
        narrow = _logits(model, batch)
    assert not torch.allclose(narrow, reference)
    query = model.bert.encoder.layer[0].attention.self.query
    size = model.bert.encoder.layer[0].attention.self.attention_head_size
    assert query.weight.grad[: 2 * size].abs().sum() > 0
    assert query.weight.grad[2 * size:].abs().sum() == 0
    assert model.bert.encoder.layer[1].intermediate.dense.weight.grad is None  # layer 2 (of 1..4) dropped at 0.5
    assert len(model.bert.encoder.layer) == 4 and type(query) is torch.nn.Linear
    assert torch.equal(_logits(model, batch), reference)


def test_sub_network_is_restored_after_an_error(folder):
    model = _model(folder)
    with pytest.raises(RuntimeError, match="boom"):
        with adaptive.sub_network(model, 0.25, 0.75):
            raise RuntimeError("boom")
    assert len(model.bert.encoder.layer) == 4
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 4


@pytest.mark.parametrize("width,depth", GRID)
def test_exported_sub_network_equals_the_slice(folder, tmp_path, width, depth):
    model, batch = _model(folder), _batch()
    adaptive.rewire(model, *adaptive.head_neuron_importance(model, [batch]))
    with adaptive.sub_network(model, width, depth):
        expected = _logits(model, batch)
    out = adaptive.export_sub_network(model, width, depth, tmp_path / "sub")
    loaded = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert torch.allclose(_logits(loaded, batch), expected, atol=1e-6, rtol=1e-5)
    heads, neurons = adaptive.width_sizes(model, width)
    info = loaded.config.kdkit_sub_network
    assert (info["heads"], info["neurons"], info["layers"]) == (heads, neurons, adaptive.kept_layers(4, depth))
    assert loaded.config.num_hidden_layers == len(info["layers"])
    if width == 1.0:
        assert type(loaded) is BertForSequenceClassification and not (out / "modeling_narrow_bert.py").exists()
    size = sum(p.numel() for p in loaded.parameters())
    full = sum(p.numel() for p in model.parameters())
    assert size < full or (width, depth) == (1.0, 1.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_only_bert_encoders():
    with pytest.raises(ModelError, match="BERT-family"):
        adaptive.num_heads(torch.nn.Linear(2, 2))
