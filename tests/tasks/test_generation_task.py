"""The generation task end to end on a tiny random Llama: layout, masking, on-policy sampling, cache, export."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from kdkit.capture import Capture
from kdkit.config import load_recipe
from kdkit.errors import ConfigError, ModelError
from kdkit.signals import LiveTeacher, SignalSpec, build_cache
from kdkit.signals.cache import CachedTeacher, fingerprint_tokenizer
from kdkit.tasks import get_task
from kdkit.tasks.generation.batches import Encoder, GenerationCollator, OnPolicy, layout, model_inputs, split_batch
from kdkit.tasks.generation.data import Example
from kdkit.tasks.generation.evaluation import rouge_scores, token_scores
from kdkit.terms.token import TokenKDLoss, TokenKDTerm
from tiny import make_tiny_generation_jsonl, make_tiny_lm, make_tiny_t5, run_cli


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")


@pytest.fixture(scope="module")
def lm(tiny_lm):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_lm).eval(), AutoTokenizer.from_pretrained(tiny_lm)


def recipe_dict(tiny_lm, data_file, out, **changes) -> dict:
    recipe = {"task": "generation", "name": "g", "output_dir": str(out),
              "data": {"train_file": str(data_file), "max_prompt_length": 12, "prompt_tail": 1,
                       "max_completion_length": 4},
              "teacher": {"model": str(tiny_lm), "cache_top_k": 8},
              "student": {"init": "teacher_layers", "layers": [0, 2]},
              "losses": [{"name": "nll", "weight": 0.5}, {"name": "token_kd", "divergence": "jsd", "weight": 0.5}],
              "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "report_to": ["none"],
                           "logging_steps": 2, "save_steps": 3},
              "evaluation": {"latency_batch_sizes": [1, 2]},
              "generation": {"max_new_tokens": 4, "samples": 2, "speed_repeats": 1}}
    for key, value in changes.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def test_prompt_cut_keeps_head_and_tail(lm):
    _, tokenizer = lm
    encoder = Encoder(tokenizer, max_prompt_length=5, prompt_tail=2, max_completion_length=3)
    prompt = "Article: the match team won game city Headline:"
    ids = tokenizer(prompt)["input_ids"]
    assert len(ids) == 8
    assert encoder.prompt(prompt) == ids[:3] + ids[-2:]
    assert encoder.prompt("Article: the Headline:") == tokenizer("Article: the Headline:")["input_ids"]
    # completions are cut to 2 tokens + EOS, and always end with EOS
    assert encoder.completion(" the match team won") == tokenizer(" the match", add_special_tokens=False
                                                                  )["input_ids"] + [tokenizer.eos_token_id]
    assert encoder.completion(" won") == [tokenizer.convert_tokens_to_ids("won"), tokenizer.eos_token_id]


def test_layout_labels_only_completion_positions(lm):
    model, tokenizer = lm
    prompts, completions = [[3, 4, 5, 6], [3, 7]], [[8, 9, 1], [10, 1]]
    batch = layout(prompts, completions, pad=0)
    # every labelled position predicts the completion token that follows it; prompt and padding carry -100
    assert batch["labels"].tolist() == [[8, 9, 1, -100], [10, 1, -100, -100]]
    width_p = 4
    for i, completion in enumerate(completions):
        assert batch["input_ids"][i, width_p:width_p + len(completion)].tolist() == completion
    assert split_batch(batch) == (prompts, completions)
    # the kept logits are the last K positions of the full pass, and left padding does not change them
    with torch.no_grad():
        kept = model(**model_inputs(batch)).logits
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"]).logits
        alone = model(input_ids=torch.tensor([prompts[1] + completions[1]])).logits
    assert torch.allclose(kept, full[:, -4:], atol=1e-5)
    # row 1 alone: its prompt's last position and its completion's first predict what the batch's columns do
    assert torch.allclose(kept[1, :2], alone[0, 1:3], atol=1e-4)


def test_empty_prompt_refused():
    with pytest.raises(ModelError, match="empty prompt"):
        layout([[]], [[1]], pad=0)


def test_on_policy_sampling_is_seeded_and_leaves_global_rng(lm):
    model, tokenizer = lm
    batch = GenerationCollator(0)([{"prompt": [3, 4, 5], "completion": [6, 1]},
                                   {"prompt": [7, 8], "completion": [9, 10, 1]}])
    sampler = OnPolicy(1.0, seed=5, max_new_tokens=4, temperature=1.0, pad_token_id=0, eos_token_id=1)
    state = torch.get_rng_state()
    first = sampler(batch, model, (3, 0, 0))
    assert torch.equal(torch.get_rng_state(), state)
    again = sampler(batch, model, (3, 0, 0))
    assert all(torch.equal(first[k], again[k]) for k in first)
    prompts, completions = split_batch(first)
    assert prompts == [[3, 4, 5], [7, 8]]
    assert all(0 < len(c) <= 4 and (c[-1] == 1 or len(c) == 4) and 1 not in c[:-1] for c in completions)
    others = [split_batch(sampler(batch, model, (step, 0, 0)))[1] for step in range(4, 12)]
    assert any(c != completions for c in others)  # other steps draw other samples
    never = OnPolicy(0.0, seed=5, max_new_tokens=4, temperature=1.0, pad_token_id=0, eos_token_id=1)
    assert never(batch, model, (3, 0, 0)) is batch and never.sampled == 0


def test_cached_topk_teacher_matches_live(lm, tmp_path):
    """The cache stores the teacher's top-k at completion positions only; the term reads them without expanding to
    the vocabulary, and with k = V − 1 (a one-token tail, exact at T = 1) equals the live teacher's loss."""
    model, tokenizer = lm
    vocab = model.config.vocab_size
    encoder = Encoder(tokenizer, 12, 1, 4)
    examples = [Example("Article: the match team won Headline:", " the match"),
                Example("Article: city mayor said Headline:", " city mayor said new")]
    rows = encoder.rows(examples)
    dataset = [dict(zip(rows, values)) for values in zip(*rows.values())]
    collate = GenerationCollator(0)
    spec = SignalSpec(logits="topk", top_k=vocab - 1, dtype="float32")
    forward = get_task("generation").teacher_forward
    cache = build_cache(tmp_path / "c", model, dataset, collate, spec,
                        tokenizer_fingerprint=fingerprint_tokenizer(tokenizer), batch_size=1, progress=False,
                        forward=forward)
    assert cache.manifest["num_tokens"] == sum(len(c) for c in rows["completion"])  # completion positions only
    batch = collate(dataset)
    cached = CachedTeacher(cache, expand_topk=False)(batch)
    assert cached.logits is None and cached.modules["topk"][0].shape == (2, 5, vocab - 1)
    live = LiveTeacher(model, forward)(batch)
    student = Capture(model)(**model_inputs(batch))
    student.logits = student.logits + torch.randn_like(student.logits)
    for divergence in ("forward_kl", "reverse_kl", "jsd", "tvd"):
        term = TokenKDTerm(TokenKDLoss(name="token_kd", divergence=divergence))
        assert torch.allclose(term(student, cached, batch), term(student, live, batch), atol=1e-5), divergence


def test_rouge_scores_by_hand():
    scores = rouge_scores(["the cat sat", ""], ["the cat sat on the mat", "anything"])
    # ROUGE-1: 3 matches, P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3
    assert scores["rouge1"][0] == pytest.approx(2 / 3)
    assert scores["rouge2"][0] == pytest.approx(2 * 1 * 0.4 / 1.4)  # bigrams: 2 of 2, 2 of 5
    assert scores["rougeL"][0] == pytest.approx(2 / 3)
    assert [values[1] for values in scores.values()] == [0.0, 0.0, 0.0]


def test_generation_end_to_end_exports_a_pipeline_model(tiny_lm, tmp_path):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl")
    recipe = load_recipe(recipe_dict(tiny_lm, data, tmp_path / "run"))
    report = get_task("generation").run(recipe)
    assert set(report["student"]["metrics"]) == {"rougeL", "rouge1", "rouge2", "perplexity"}
    assert report["student"]["params"] < report["teacher"]["params"]
    assert len(report["samples"]) == 2 and {"prompt", "reference", "teacher", "student"} <= set(report["samples"][0])
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Samples:" in markdown and "perplexity ↓" in markdown
    per_query = json.loads((tmp_path / "run" / "per_query.json").read_text())
    assert len(per_query["student"]["rougeL"]) == report["student"]["n"] == 6
    logs = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any("loss_token_kd" in entry for entry in logs)
    folder = tmp_path / "run" / "student"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2 and model.generation_config.max_new_tokens == 4
    generator = pipeline("text-generation", model=str(folder))
    out = generator("Article: the match Headline:", return_full_text=False)
    assert isinstance(out[0]["generated_text"], str)


def test_on_policy_run_uses_live_teacher_and_samples(tiny_lm, tmp_path, capsys):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = load_recipe(recipe_dict(tiny_lm, data, tmp_path / "run", generation={"on_policy": 0.5},
                                     losses=[{"name": "token_kd", "divergence": "reverse_kl"}]))
    task = get_task("generation")
    report = task.run(recipe)
    assert "teacher runs live" in capsys.readouterr().out
    assert report["student"]["n"] == 3


def test_recipe_checks(tiny_lm, tmp_path):
    data = tmp_path / "g.jsonl"
    with pytest.raises(ConfigError, match="on_policy"):
        load_recipe(recipe_dict(tiny_lm, data, tmp_path / "r", generation={"on_policy": 0.5},
                                losses=[{"name": "nll"}]))
    with pytest.raises(ConfigError, match="prompt_tail"):
        load_recipe(recipe_dict(tiny_lm, data, tmp_path / "r", data={"prompt_tail": 12}))
    with pytest.raises(ConfigError, match="'kd'"):
        load_recipe(recipe_dict(tiny_lm, data, tmp_path / "r", losses=[{"name": "kd"}]))


def test_sequence_kd_trains_on_the_teachers_greedy_completions(tiny_lm, lm, tmp_path):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=20)
    recipe = load_recipe(recipe_dict(tiny_lm, data, tmp_path / "run", generation={"sequence_kd": True},
                                     losses=[{"name": "nll"}]))
    task = get_task("generation")
    prep, splits, _ = task.prepare_all(recipe)
    model, tokenizer = lm
    prompts = list(splits["train"]["prompt"])
    with torch.no_grad():
        expected = [model.generate(input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=3, pad_token_id=0,
                                   eos_token_id=1)[0, len(p):].tolist() for p in prompts]
    for completion, generated in zip(splits["train"]["completion"], expected):
        generated = generated[:generated.index(1)] if 1 in generated else generated
        assert completion == generated + [1]  # the teacher's tokens, ended by EOS
    references = Encoder(tokenizer, 12, 1, 4).rows(prep.data["train"])["completion"]
    assert list(splits["train"]["completion"]) != references
    again = task.prepare_all(recipe)[1]["train"]  # read back from the store
    assert list(again["completion"]) == list(splits["train"]["completion"])


def test_kdkit_eval_scores_a_saved_causal_lm_beside_its_teacher(tiny_lm, tmp_path, capsys):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=20)
    code, out, err = run_cli(["eval", str(tiny_lm), "--task", "generation", "--train-file", str(data),
                              "--teacher", str(tiny_lm), "--max-length", "12", "--output-dir", str(tmp_path / "ev")],
                             capsys)
    assert code == 0, err
    assert "rougeL (%)" in out and "perplexity ↓" in out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    # the same weights on both sides: the same completions, so the same scores
    assert report["teacher"]["metrics"] == report["student"]["metrics"]
    assert (tmp_path / "ev" / "completions.jsonl").is_file()
    code, out, err = run_cli(["eval", str(tiny_lm), "--task", "generation", "--train-file", str(data),
                              "--max-length", "12", "--score", "likelihood"], capsys)
    assert code == 0, err
    assert "token_accuracy (%)" in out and "perplexity ↓" in out and "rougeL" not in out
    code, _, err = run_cli(["eval", str(tiny_lm), "--train-file", str(data), "--score", "likelihood"], capsys)
    assert code == 2 and "--score is a generation option" in err
    code, _, err = run_cli(["eval", str(tiny_lm), "--task", "generation", "--train-file", str(data),
                            "--label-column", "x"], capsys)
    assert code == 2 and "classification options" in err


def test_seq2seq_layout_feeds_the_decoder_its_shifted_completion():
    batch = layout([[3, 4, 5], [6]], [[7, 8, 1], [9, 1]], pad=0, decoder_start=0)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[0, 7, 8], [0, 9, 0]]
    assert batch["labels"].tolist() == [[7, 8, 1], [9, 1, -100]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert split_batch(batch) == ([[3, 4, 5], [6]], [[7, 8, 1], [9, 1]])
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}


def test_seq2seq_end_to_end_with_a_cached_teacher_and_on_policy(tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM

    t5 = make_tiny_t5(tmp_path / "t5")
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = recipe_dict(t5, data, tmp_path / "run", student={"init": "config", "layers": None,
                                                              "overrides": {"num_layers": 1, "num_decoder_layers": 1}})
    report = get_task("generation").run(load_recipe(recipe))
    assert "caching teacher signals" in capsys.readouterr().out
    assert report["student"]["params"] < report["teacher"]["params"]
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "run" / "student")
    assert model.config.num_layers == 1 and model.config.num_decoder_layers == 1
    recipe = recipe_dict(t5, data, tmp_path / "gkd", student={"init": "config", "layers": None,
                                                              "overrides": {"num_layers": 1, "num_decoder_layers": 1}},
                         generation={"on_policy": 1.0}, losses=[{"name": "token_kd"}])
    assert get_task("generation").run(load_recipe(recipe))["student"]["n"] == 3


def test_a_causal_student_for_an_encoder_decoder_teacher_is_refused(tiny_lm, tmp_path):
    t5 = make_tiny_t5(tmp_path / "t5")
    recipe = recipe_dict(t5, tmp_path / "g.jsonl", tmp_path / "run",
                         student={"init": "pretrained", "model": str(tiny_lm), "layers": None})
    make_tiny_generation_jsonl(tmp_path / "g.jsonl")
    with pytest.raises(ConfigError, match="encoder-decoder but the teacher|causal LM but the teacher"):
        get_task("generation").run(load_recipe(recipe))


def test_a_tied_language_model_resumes_from_its_checkpoint(tiny_lm, tmp_path):
    """Checkpoints store a tied output head once (safetensors refuses two names for one memory); resume restores it
    through the tie, and the student comes out with its head still tied."""
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = recipe_dict(tiny_lm, data, tmp_path / "run", training={"max_steps": 2, "save_steps": 2},
                         losses=[{"name": "nll"}])
    task = get_task("generation")
    task.run(load_recipe(recipe))
    recipe["training"]["max_steps"] = 3
    report = task.run(load_recipe(recipe), resume=True, force=True)
    assert report["student"]["n"] == 3
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student")
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()


def test_token_scores_by_hand(lm):
    model, tokenizer = lm
    examples = [Example("Article: the match Headline:", " team won"), Example("Article: city Headline:", " game")]
    rows = Encoder(tokenizer, 12, 1, 4).rows(examples)
    scores = token_scores(model, rows, pad=0, batch_size=2)
    for i, (prompt, completion) in enumerate(zip(rows["prompt"], rows["completion"])):
        with torch.no_grad():  # the unpadded sequence, every position's logits
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
        target = torch.tensor(completion)
        nll = torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        assert scores["nll"][i] == pytest.approx(nll, rel=1e-4)
        assert scores["tokens"][i] == len(completion)
        assert scores["correct"][i] == int((logits.argmax(-1) == target).sum())


def test_likelihood_scoring_ranks_on_token_accuracy_and_measures_the_compressed_student_before(tiny_lm, tmp_path):
    data = make_tiny_generation_jsonl(tmp_path / "g.jsonl", n=30)
    recipe = load_recipe(recipe_dict(tiny_lm, data, tmp_path / "run", generation={"score": "likelihood"},
                                     student={"embedding": {"method": "svd", "fraction": 0.3}},
                                     evaluation={"before": True, "int8": True}))
    report = get_task("generation").run(recipe)
    int8 = report["variants"]["int8"]
    assert int8["size_mb"] < report["student"]["size_mb"] and set(int8["metrics"]) == {"token_accuracy", "perplexity"}
    assert report["primary_metric"] == "token_accuracy" and report["samples"] == []
    assert set(report["student"]["metrics"]) == set(report["teacher"]["metrics"]) == {"token_accuracy", "perplexity"}
    before = report["variants"]["before training"]
    assert before["name"] == "student as built" and set(before["metrics"]) == {"token_accuracy", "perplexity"}
    assert before["metrics"] != report["student"]["metrics"]  # trained after it was measured
    assert 0 <= report["student"]["metrics"]["token_accuracy"] <= 1
    per_query = json.loads((tmp_path / "run" / "per_query.json").read_text())
    assert len(per_query["student"]["token_accuracy"]) == report["student"]["n"]
    assert not (tmp_path / "run" / "completions.jsonl").exists()
    assert "token_accuracy (%)" in (tmp_path / "run" / "report.md").read_text()
