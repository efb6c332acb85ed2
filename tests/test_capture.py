import math

import pytest
import torch
import transformers as tf
from torch import nn

from kdkit.capture import (
    Capture,
    Representations,
    attention_modules,
    attention_scores,
    hidden_size,
    num_heads,
    num_layers,
)
from kdkit.errors import ConfigError, ModelError

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37)
MODELS = {
    "bert": lambda attn: tf.BertForSequenceClassification(
        tf.BertConfig(**SMALL, num_labels=3, attn_implementation=attn)
    ),
    "mpnet": lambda attn: tf.MPNetForSequenceClassification(tf.MPNetConfig(**SMALL, num_labels=3)),
    "distilbert": lambda attn: tf.DistilBertForSequenceClassification(
        tf.DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=2, hidden_dim=37, num_labels=3,
                            attn_implementation=attn)
    ),
    "llama": lambda attn: tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL, num_key_value_heads=2, attn_implementation=attn)),
}
QUERY_OF_BLOCK_1 = {
    "bert": "bert.encoder.layer.1.attention.self.query",
    "mpnet": "mpnet.encoder.layer.1.attention.attn.q",
    "distilbert": "distilbert.transformer.layer.1.attention.q_lin",
    "llama": "model.layers.1.self_attn.q_proj",
}


def make(kind: str, attn: str = "eager") -> nn.Module:
    torch.manual_seed(0)
    return MODELS[kind](attn).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 17, 42, 9, 3, 11], [7, 8, 23, 4, 0, 0]])
    return {"input_ids": ids, "attention_mask": (torch.arange(6) < torch.tensor([[6], [4]])).long()}


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.gru = nn.GRU(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, input_ids):
        output, _ = self.gru(self.embed(input_ids))
        return self.head(output[:, -1])


def all_hooks(model: nn.Module) -> list:
    return [hook for module in model.modules() for hook in module._forward_hooks.values()]


@pytest.mark.parametrize("kind", list(MODELS))
def test_capture_gives_the_plain_forward_outputs(kind):
    model = make(kind)
    config_before = model.config.to_dict()
    with torch.no_grad():
        plain = model(**batch(), output_hidden_states=True, output_attentions=True)
        own_hooks = all_hooks(model)  # transformers installs output-recording hooks of its own on first use
        reps = Capture(model, hidden_states=True, attentions=True, modules=[QUERY_OF_BLOCK_1[kind]])(**batch())
    torch.testing.assert_close(reps.logits, plain.logits, rtol=0, atol=0)
    assert len(reps.hidden_states) == 5 and len(reps.attentions) == 4
    for ours, theirs in zip(reps.hidden_states + reps.attentions, plain.hidden_states + plain.attentions):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert reps.attentions[0].shape == (2, 2, 6, 6)
    torch.testing.assert_close(reps.attentions[2].sum(-1), torch.ones(2, 2, 6))
    assert reps.modules[QUERY_OF_BLOCK_1[kind]].shape == (2, 6, 32)
    torch.testing.assert_close(reps.attention_mask, batch()["attention_mask"])
    assert model.config.to_dict() == config_before and all_hooks(model) == own_hooks


def test_hidden_state_zero_is_the_embedding_output():
    model = make("bert")
    reps = Capture(model, hidden_states=True, modules=["bert.embeddings"])(**batch())
    torch.testing.assert_close(reps.hidden_states[0], reps.modules["bert.embeddings"], rtol=0, atol=0)


def test_capture_keeps_gradients():
    reps = Capture(make("bert"), hidden_states=True)(**batch())
    assert reps.logits.requires_grad and reps.hidden_states[1].requires_grad


def test_attentions_need_eager_attention():
    with pytest.raises(ModelError, match="'sdpa'.*attn_implementation=\"eager\""):
        Capture(make("bert", attn="sdpa"), attentions=True)
    Capture(make("bert", attn="sdpa"), hidden_states=True)  # hidden states work with any kernel


def test_plain_module_hooks_keep_the_first_tensor_of_tuples_and_are_removed():
    torch.manual_seed(0)
    model = GRUClassifier().eval()
    ids = batch()["input_ids"]
    reps = Capture(model, modules=["embed", "gru"])(input_ids=ids, attention_mask=batch()["attention_mask"])
    output, _ = model.gru(model.embed(ids))
    torch.testing.assert_close(reps.modules["gru"], output)  # GRU returns (output, h_n): output is kept
    assert reps.modules["embed"].shape == (2, 6, 8)
    torch.testing.assert_close(reps.logits, model(ids))
    assert reps.hidden_states is None and reps.attentions is None
    assert not all_hooks(model)


def test_hooks_are_removed_when_the_forward_raises():
    model = GRUClassifier()
    capture = Capture(model, modules=["embed", "gru", "head"])
    with pytest.raises(IndexError):
        capture(input_ids=torch.tensor([[1, 500]]))  # token id outside the vocabulary
    assert not all_hooks(model)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (lambda x: x, "tensor"),
        (lambda x: {"logits": x, "other": 1}, "dict"),
        (lambda x: (x, x + 1), "tuple"),
        (lambda x: tf.modeling_outputs.SequenceClassifierOutput(logits=x), "model output"),
    ],
)
def test_logits_are_found_in_any_common_output(output, expected):
    class Model(nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return output(input_ids.float() * attention_mask)

    inputs = {"input_ids": torch.ones(2, 3), "attention_mask": torch.tensor([[1.0, 1.0, 0.0]] * 2)}
    torch.testing.assert_close(Capture(Model())(**inputs).logits, inputs["attention_mask"], msg=expected)


def test_plain_module_without_input_ids_or_matching_keywords_is_refused():
    with pytest.raises(ModelError, match="GRUClassifier.forward takes \\['input_ids'\\]"):
        Capture(GRUClassifier())(tokens=torch.tensor([[1]]))


def test_unknown_module_names_and_plain_module_flags_raise():
    with pytest.raises(ModelError, match="'gur' not found.*'gru'"):
        Capture(GRUClassifier(), modules=["gur"])
    with pytest.raises(ModelError, match="need a transformers PreTrainedModel, got GRUClassifier"):
        Capture(GRUClassifier(), hidden_states=True)


def test_pooled_cls_and_masked_mean_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 0.0], [2.0, 2.0], [4.0, 8.0]]])
    reps = Representations(hidden_states=(hidden * 0, hidden), attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    torch.testing.assert_close(reps.pooled(1, "cls"), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(reps.pooled(-1, "mean"), torch.tensor([[2.0, 3.0], [2.0, 10 / 3]]))
    torch.testing.assert_close(Representations(hidden_states=(hidden,)).pooled(0, "mean"), hidden.mean(1))
    with pytest.raises(ConfigError, match="how='max'.*'cls', 'mean'"):
        reps.pooled(1, "max")
    with pytest.raises(ConfigError, match="layer 2 is outside 0..1"):
        reps.pooled(2)
    with pytest.raises(ConfigError, match="hidden_states=True"):
        Representations().pooled(0)


@pytest.mark.parametrize("kind", list(MODELS))
def test_attention_modules_name_qkv_of_every_block(kind):
    model = make(kind)
    found = attention_modules(model)
    assert len(found) == 4 and found[1]["query"] == QUERY_OF_BLOCK_1[kind]
    names = dict(model.named_modules())
    assert all(isinstance(names[name], nn.Linear) for block in found for name in block.values())
    assert found[3]["value"].replace("3", "1", 1).rsplit(".", 1)[0] == QUERY_OF_BLOCK_1[kind].rsplit(".", 1)[0]


def test_attention_modules_needs_a_transformer():
    with pytest.raises(ModelError):
        attention_modules(GRUClassifier())


def test_attention_scores_reproduce_bert_eager_probabilities():
    """softmax(QK^T/sqrt(d) + extended mask) from hooked Q/K equals the attention BERT itself returns."""
    model = make("bert")
    names = attention_modules(model)
    capture = Capture(model, attentions=True, modules=[n for block in names for n in (block["query"], block["key"])])
    with torch.no_grad():
        reps = capture(**batch())
    mask = batch()["attention_mask"][:, None, None, :]
    extended = (1 - mask) * torch.finfo(torch.float32).min
    for layer, block in enumerate(names):
        scores = attention_scores(reps.modules[block["query"]], reps.modules[block["key"]], num_heads(model))
        assert scores.shape == (2, 2, 6, 6)
        torch.testing.assert_close(torch.softmax(scores + extended, -1), reps.attentions[layer])


def test_attention_scores_by_hand_with_grouped_key_heads():
    q = torch.tensor([[[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]]])  # (1, 2, 4): 2 heads of size 2
    k = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])  # (1, 2, 2): one key head shared by both query heads
    expected = torch.tensor([[[[1.0, 2.0], [1.0, 0.0]], [[2.0, 0.0], [1.0, 2.0]]]]) / math.sqrt(2)
    torch.testing.assert_close(attention_scores(q, k, num_heads=2), expected)
    with pytest.raises(ModelError, match="width 4 does not divide by num_heads=3"):
        attention_scores(q, k, num_heads=3)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "llama"])
def test_shape_readers(kind):
    model = make(kind)
    assert (num_layers(model), hidden_size(model), num_heads(model)) == (4, 32, 2)


def test_shape_readers_refuse_plain_modules():
    with pytest.raises(ModelError, match="GRUClassifier has no transformers config"):
        num_layers(GRUClassifier())
