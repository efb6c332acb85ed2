import pytest
import torch
import transformers as tf
from torch import nn

from kdkit.errors import ConfigError, ModelError
from kdkit.students import find_layers, student_from_config, student_from_teacher_layers

CONFIGS = {
    "bert": lambda: tf.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, num_labels=3
    ),
    "mpnet": lambda: tf.MPNetConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, num_labels=3
    ),
    "distilbert": lambda: tf.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=4, n_heads=2, hidden_dim=37, num_labels=3
    ),
    "roberta": lambda: tf.RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, num_labels=3
    ),
    "llama": lambda: tf.LlamaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=37, num_labels=3, pad_token_id=0,
    ),
}
BLOCK_PATHS = {
    "bert": "bert.encoder.layer",
    "mpnet": "mpnet.encoder.layer",
    "distilbert": "distilbert.transformer.layer",
    "roberta": "roberta.encoder.layer",
    "llama": "model.layers",
}


def make(kind: str, auto=tf.AutoModelForSequenceClassification) -> nn.Module:
    torch.manual_seed(0)
    return auto.from_config(CONFIGS[kind]()).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 17, 42, 9, 3, 11], [7, 8, 23, 4, 0, 0]])
    return {"input_ids": ids, "attention_mask": (torch.arange(6) < torch.tensor([[6], [4]])).long()}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_find_layers_returns_the_block_list(kind):
    model = make(kind)
    parent, attribute, blocks = find_layers(model)
    assert getattr(parent, attribute) is blocks
    assert blocks is model.get_submodule(BLOCK_PATHS[kind])


def test_find_layers_rejects_a_plain_module():
    with pytest.raises(ModelError, match="Linear"):
        find_layers(nn.Linear(2, 2))


@pytest.mark.parametrize("kind", ["bert", "mpnet", "distilbert", "llama"])
def test_student_equals_teacher_with_skipped_blocks_as_identity(kind):
    """Student [0, 2] == teacher whose blocks 1 and 3 pass their input through (set by output-replacing hooks)."""
    teacher = make(kind)
    student = student_from_teacher_layers(teacher, [0, 2])
    assert len(find_layers(student)[2]) == 2
    assert student.config.num_hidden_layers == 2

    def identity(module, args, output):
        return args[0] if isinstance(output, torch.Tensor) else (args[0], *output[1:])

    blocks = find_layers(teacher)[2]
    handles = [blocks[i].register_forward_hook(identity) for i in (1, 3)]
    try:
        with torch.no_grad():
            expected = teacher(**batch()).logits
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(student(**batch()).logits, expected)
        assert not torch.allclose(teacher(**batch()).logits, expected)  # the skipped blocks mattered


def test_student_does_not_share_or_change_teacher_parameters():
    teacher = make("bert")
    before = {name: value.clone() for name, value in teacher.state_dict().items()}
    student = student_from_teacher_layers(teacher, [1, 3])
    teacher_ptrs = {p.data_ptr() for p in teacher.parameters()}
    assert not teacher_ptrs & {p.data_ptr() for p in student.parameters()}
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(1.0)
    assert teacher.config.num_hidden_layers == 4 and len(teacher.bert.encoder.layer) == 4
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    torch.testing.assert_close(
        student.bert.encoder.layer[0].output.dense.weight, before["bert.encoder.layer.1.output.dense.weight"] + 1
    )


@pytest.mark.parametrize(
    ("layers", "fragment"),
    [([], "empty"), ([0, 4], "4"), ([-1, 2], "-1"), ([2, 1], "not strictly increasing"), ([1, 1], "not strictly")],
)
def test_bad_layer_lists_raise_model_error(layers, fragment):
    with pytest.raises(ModelError) as info:
        student_from_teacher_layers(make("bert"), layers)
    message = str(info.value)
    assert str(layers) in message and fragment in message and "0..3" in message


@pytest.mark.parametrize(
    ("kind", "auto"),
    [("bert", tf.AutoModelForSequenceClassification), ("distilbert", tf.AutoModelForSequenceClassification),
     ("llama", tf.AutoModelForCausalLM)],
)
def test_student_saves_and_reloads_with_auto_classes(kind, auto, tmp_path):
    student = student_from_teacher_layers(make(kind, auto), [1, 3])
    student.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch()).logits, student(**batch()).logits, rtol=0, atol=0)


def test_llama_student_renumbers_cache_slots():
    student = student_from_teacher_layers(make("llama", tf.AutoModelForCausalLM), [1, 3])
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    with torch.no_grad():
        out = student(input_ids=batch()["input_ids"], use_cache=True)
    assert len(out.past_key_values.layers) == 2


def test_per_layer_config_lists_follow_the_kept_blocks():
    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    config = tf.Qwen2Config(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=37, layer_types=types, use_sliding_window=True, sliding_window=4,
    )
    teacher = tf.Qwen2ForCausalLM(config)
    student = student_from_teacher_layers(teacher, [0, 1, 3])
    assert student.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert teacher.config.layer_types == types
    student.config.validate()


def test_student_from_config_overrides_shape_and_keeps_the_rest():
    base = CONFIGS["bert"]()
    model = student_from_config(base, {"num_hidden_layers": 2, "hidden_size": 16}, tf.BertForSequenceClassification)
    assert len(model.bert.encoder.layer) == 2 and model.config.hidden_size == 16
    assert model.config.num_labels == 3 and model.config.intermediate_size == 37
    assert base.num_hidden_layers == 4 and base.hidden_size == 32
    assert model(**batch()).logits.shape == (2, 3)


def test_student_from_config_accepts_aliases_and_rederives_dependent_values():
    distil = student_from_config(
        CONFIGS["distilbert"](), {"num_hidden_layers": 1}, tf.DistilBertForSequenceClassification
    )
    assert distil.config.n_layers == 1 and len(distil.distilbert.transformer.layer) == 1

    llama = student_from_config(CONFIGS["llama"](), {"hidden_size": 16}, tf.LlamaForCausalLM)
    assert llama.config.head_dim == 8
    assert llama(input_ids=batch()["input_ids"]).logits.shape == (2, 6, 100)

    qwen = tf.Qwen2Config(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=37,
    )
    assert student_from_config(qwen, {"num_hidden_layers": 2}, tf.Qwen2ForCausalLM).config.layer_types == [
        "full_attention", "full_attention",
    ]


def test_student_from_config_keeps_eager_attention():
    base = CONFIGS["bert"]()
    base._attn_implementation = "eager"
    model = student_from_config(base, {"num_hidden_layers": 1}, tf.BertModel)
    assert model.config._attn_implementation == "eager"


def test_student_from_config_rejects_unknown_keys_and_bad_widths():
    with pytest.raises(ConfigError, match="'hiden_size'.*BertConfig.*did you mean 'hidden_size'"):
        student_from_config(CONFIGS["bert"](), {"hiden_size": 16}, tf.BertModel)
    with pytest.raises(ConfigError, match="hidden_size=30 does not divide by num_attention_heads=4"):
        student_from_config(CONFIGS["bert"](), {"hidden_size": 30, "num_attention_heads": 4}, tf.BertModel)
