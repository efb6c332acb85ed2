"""Noisy self-distillation: seeded, label-preserving source noise, teacher dropout, and a noisy run end to end."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kdkit.capture import Capture
from kdkit.config import load_recipe
from kdkit.errors import CacheError, ConfigError
from kdkit.tasks import get_task
from kdkit.tasks.generation.batches import Encoder, GenerationCollator, model_inputs, split_batch
from kdkit.tasks.generation.data import Example
from kdkit.tasks.generation.noise import (Neighbours, SourceNoise, TeacherDropout, local_shuffle, noisy_text,
                                          sentence_noise, word_drop)
from tiny import make_tiny_generation_jsonl, make_tiny_lm

WORDS = "one two three four five six seven eight nine ten".split()


def noise(**changes):
    cfg = dict(teacher_dropout=0.15, word_drop=0.1, shuffle_window=3, sentence_shuffle=0.0, sentence_drop=0.0,
               neighbour_replace=0.0)
    return SimpleNamespace(**(cfg | changes))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")


def test_word_noise_is_seeded_and_bounded():
    assert word_drop(WORDS, 0.5, random.Random(1)) == word_drop(WORDS, 0.5, random.Random(1))
    assert word_drop(WORDS, 0.5, random.Random(1)) != word_drop(WORDS, 0.5, random.Random(2))
    assert len(word_drop(WORDS, 0.99999, random.Random(0))) == 1  # at least one word stays
    for seed in range(50):
        shuffled = local_shuffle(WORDS, 3, random.Random(seed))
        assert sorted(shuffled) == sorted(WORDS)
        assert all(abs(shuffled.index(w) - i) <= 3 for i, w in enumerate(WORDS))  # no word moves more than k
    assert local_shuffle(WORDS, 0, random.Random(0)) == WORDS


def test_sentence_noise():
    sentences = ["A b.", "C d!", "E f?", "G h."]
    assert sentence_noise(sentences, 0.0, 0.0, random.Random(0)) == sentences
    shuffled = [sentence_noise(sentences, 1.0, 0.0, random.Random(s)) for s in range(5)]
    assert all(sorted(x) == sorted(sentences) for x in shuffled) and any(x != sentences for x in shuffled)
    assert len(sentence_noise(sentences, 0.0, 0.999999, random.Random(0))) == 1
    text = noisy_text("A b c. D e f.", noise(word_drop=0.0, shuffle_window=0, sentence_shuffle=1.0), random.Random(3))
    assert sorted(text.split()) == sorted("A b c. D e f.".split())


def test_neighbours_are_the_nearest_other_token():
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    assert Neighbours(embeddings, chunk=2)([0, 1, 2, 3]) == [1, 0, 1, 2]


def test_source_noise_changes_the_source_only_and_keeps_labels(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    encoder = Encoder(tokenizer, 40, 1, 4)
    body = "the match team won game city mayor said new plan"
    examples = [Example(f"Article: {body} Headline:", " the match", source=body),
                Example("Article: bank rates rise Headline:", " bank rates", source="bank rates rise")]
    rows = encoder.rows(examples)
    batch = GenerationCollator(0)([{"prompt": p, "completion": c, "index": i}
                                   for i, (p, c) in enumerate(zip(rows["prompt"], rows["completion"]))])
    hook = SourceNoise(noise(word_drop=0.3), examples, encoder, 0, seed=7, neighbours=None)
    out = hook(batch, None, (0, 0, 0))
    again = hook(batch, None, (0, 0, 0))
    assert all(torch.equal(out[k], again[k]) for k in out)  # seeded by (seed, step, micro, rank, example)
    assert not torch.equal(hook(batch, None, (1, 0, 0))["input_ids"], out["input_ids"])  # another step, other noise
    prompts, completions = split_batch(out)
    assert completions == rows["completion"]  # labels untouched
    assert torch.equal(out["labels"], batch["labels"])
    assert torch.equal(out["teacher_input_ids"], batch["input_ids"])  # the teacher keeps the clean prompts
    article, headline = tokenizer.convert_tokens_to_ids(["Article:", "Headline:"])
    for prompt, clean in zip(prompts, rows["prompt"]):
        assert prompt[0] == article and prompt[-1] == headline  # the template survives
        assert set(prompt) <= set(clean)  # word drop and shuffle only remove and move source words
    assert prompts[0] != rows["prompt"][0]


def _one_example(tiny_lm):
    """(model in eval mode, its Capture, a batch of one encoded example)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    rows = Encoder(tokenizer, 12, 1, 4).rows([Example("Article: the match team Headline:", " the match")])
    batch = GenerationCollator(0)([{"prompt": rows["prompt"][0], "completion": rows["completion"][0]}])
    return model, Capture(model), batch


def test_teacher_dropout_perturbs_only_inside_the_call(tiny_lm):
    _, capture, batch = _one_example(tiny_lm)
    with torch.no_grad():
        clean = capture(**model_inputs(batch)).logits
        noisy = TeacherDropout(0.5, lambda c, b: c(**model_inputs(b)))(capture, batch).logits
        after = capture(**model_inputs(batch)).logits
    assert not torch.allclose(clean, noisy)
    assert torch.equal(clean, after)  # the hooks are gone


def test_teacher_dropout_drops_each_blocks_update_and_keeps_the_residual_stream(tiny_lm):
    from kdkit.capture import find_layers

    model, capture, batch = _one_example(tiny_lm)
    _, _, blocks = find_layers(model)
    seen = {}

    def first(args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def block0(module, args, kwargs, output):  # registered first: sees block 0's own output
        seen["in"], seen["out"] = first(args, kwargs).clone(), (output[0] if isinstance(output, tuple) else output)

    def block1(module, args, kwargs):  # what block 1 reads: block 0's output after the teacher noise
        seen["next"] = first(args, kwargs).clone()

    handles = [blocks[0].register_forward_hook(block0, with_kwargs=True),
               blocks[1].register_forward_pre_hook(block1, with_kwargs=True)]
    torch.manual_seed(0)
    with torch.no_grad():
        TeacherDropout(0.5, lambda c, b: c(**model_inputs(b)))(capture, batch)
    for handle in handles:
        handle.remove()
    update, kept = seen["out"] - seen["in"], seen["next"] - seen["in"]
    dropped = kept == 0
    assert dropped.any() and (~dropped).any()
    assert torch.allclose(kept[~dropped], 2 * update[~dropped], atol=1e-5)  # inverted dropout at p 0.5
    assert torch.equal(seen["next"][dropped], seen["in"][dropped])  # a dropped place keeps its residual value


def _recipe(tiny_lm, data, out, **generation):
    return {"task": "generation", "name": "noisy", "output_dir": str(out),
            "data": {"train_file": str(data), "max_prompt_length": 12, "prompt_tail": 1, "max_completion_length": 4},
            "teacher": {"model": str(tiny_lm)}, "student": {"init": "teacher_layers", "layers": [0, 1, 2, 3]},
            "losses": [{"name": "token_kd", "weight": 0.6}, {"name": "nll", "weight": 0.4}],
            "training": {"epochs": 1, "batch_size": 8, "report_to": ["none"], "save_steps": 50},
            "evaluation": {"latency_batch_sizes": [1]},
            "generation": {"max_new_tokens": 3, "speed_repeats": 1, **generation}}


def test_noisy_self_distillation_runs_with_a_live_teacher(tiny_lm, tmp_path, capsys):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = load_recipe(_recipe(tiny_lm, data, tmp_path / "run",
                                 noise={"teacher_dropout": 0.15, "word_drop": 0.1, "neighbour_replace": 0.1}))
    report = get_task("generation").run(recipe)
    out = capsys.readouterr().out
    assert "teacher runs live" in out and "dropout differs at every step" in out
    assert report["student"]["params"] == report["teacher"]["params"]  # self-distillation: the same size


def test_teacher_dropout_refuses_a_fixed_cache(tiny_lm, tmp_path):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = _recipe(tiny_lm, data, tmp_path / "run", noise={"teacher_dropout": 0.15})
    recipe["teacher"]["cache"] = str(tmp_path / "cache")
    with pytest.raises((ConfigError, CacheError), match="dropout differs at every step"):
        get_task("generation").run(load_recipe(recipe))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match="noise"):
        load_recipe(_recipe(tiny_lm, data, tmp_path / "r", noise={}, on_policy=0.5))
