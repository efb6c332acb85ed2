"""Teacher-labelled augmentation (data.augment) and unlabeled text (data.unlabeled) for classification."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from kdkit.config import load_recipe
from kdkit.engine.pipeline import build_teacher_cache
from kdkit.errors import ConfigError, DataError
from kdkit.signals import example_key
from kdkit.signals.cache import real_token_ids
from kdkit.tasks import get_task
from kdkit.tasks.classification import DataCollator, load_data
from kdkit.tasks.classification import task as task_module
from kdkit.tasks.classification.augment import (NO_LABEL, augment_text, augment_texts, nearest_words,
                                                whole_word_pieces)
from kdkit.tasks.classification.data import load_unlabeled
from kdkit.terms import TERMS
from tiny import FILLER, NEGATIVE, POSITIVE, run_cli, write_recipe

TASK = get_task("classification")


@pytest.fixture(scope="module")
def tokenizer(tiny_teacher):
    return AutoTokenizer.from_pretrained(tiny_teacher)


@pytest.fixture(scope="module")
def embeddings(tiny_teacher):
    return AutoModel.from_pretrained(tiny_teacher).get_input_embeddings().weight.detach()


def _augment(recipe, **settings):
    recipe["data"]["augment"] = settings
    return load_recipe(recipe)


def test_whole_word_pieces_are_the_vocabulary_words_without_specials(tokenizer):
    pieces = whole_word_pieces(tokenizer)
    assert set(pieces.values()) == set(POSITIVE + NEGATIVE + FILLER)
    assert all(tokenizer.convert_ids_to_tokens(i) == word for i, word in pieces.items())
    assert not set(pieces) & set(tokenizer.all_special_ids)


def test_nearest_words_by_cosine_of_the_embedding_rows(tokenizer):
    """A hand-made embedding: good and great nearly parallel, bad opposite; the word itself is never its own
    neighbour, and a word outside the vocabulary gets none."""
    vocab = tokenizer.get_vocab()
    table = torch.randn(len(vocab), 8, generator=torch.Generator().manual_seed(0)) * 0.01
    table[vocab["good"]] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    table[vocab["great"]] = torch.tensor([0.9, 0.1, 0, 0, 0, 0, 0, 0])
    table[vocab["bad"]] = torch.tensor([-1.0, 0, 0, 0, 0, 0, 0, 0])
    found = nearest_words(table, tokenizer, ["good", "bad", "zebra"], k=2)
    assert found["good"][0] == "great" and "good" not in found["good"]
    assert "good" not in found["bad"][:2] and len(found["bad"]) == 2
    assert "zebra" not in found  # [UNK]: not a whole-word piece
    cosine = torch.nn.functional.cosine_similarity(table[vocab["bad"]], table, dim=-1)
    cosine[[vocab["bad"], *tokenizer.all_special_ids]] = -2
    assert found["bad"][0] == tokenizer.convert_ids_to_tokens(int(cosine.argmax()))


def test_replacement_keeps_capitals_and_only_replaces_known_words():
    table = {"good": ["great"], "movie": ["film"]}
    rng = np.random.default_rng(0)
    assert augment_text("Good movie, 10/10!", table, rng, 0.999, 0.0, 3) == "Great film, 10/10!"
    assert augment_text("Good movie, 10/10!", table, rng, 0.0, 0.0, 3) == "Good movie, 10/10!"
    assert augment_text("zebra", table, rng, 0.999, 0.0, 3) == "zebra"
    pieces = {"it": ["he"], "s": ["a"], "don": ["do"], "t": ["a"], "th": ["a"]}
    assert augment_text("it's, don't: 10th", pieces, rng, 0.999, 0.0, 3) == "it's, don't: 10th"  # word pieces


def test_span_deletion_removes_at_most_max_span_words_and_keeps_one():
    text = " ".join(f"w{i}" for i in range(10))
    for seed in range(30):
        out = augment_text(text, {}, np.random.default_rng(seed), 0.0, 0.999, 3).split()
        assert 7 <= len(out) <= 9 and out == [w for w in text.split() if w in out]  # order kept, a span gone
        removed = [i for i, w in enumerate(text.split()) if w not in out]
        assert removed == list(range(removed[0], removed[-1] + 1))  # one contiguous span
    assert augment_text("alone", {}, np.random.default_rng(0), 0.0, 0.999, 3) == "alone"


def test_augmentation_is_deterministic_under_its_seed(tokenizer, embeddings):
    texts = ["the movie was good", "a really dull plot", "love the film"]
    settings = {"replace_prob": 0.5, "neighbours": 3, "delete_prob": 0.3, "max_span": 2}
    first = augment_texts(texts, tokenizer, embeddings, copies=3, seed=7, **settings)
    assert first == augment_texts(texts, tokenizer, embeddings, copies=3, seed=7, **settings)
    assert first != augment_texts(texts, tokenizer, embeddings, copies=3, seed=8, **settings)
    assert [row for row, _ in first] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    fewer = augment_texts(texts, tokenizer, embeddings, copies=2, seed=7, **settings)
    assert fewer == [pair for i, pair in enumerate(first) if i % 3 < 2]  # a copy does not depend on the count
    assert any(text not in texts for _, text in first)


def test_augment_adds_unlabelled_copies_to_train_only(tiny_recipe):
    plain = load_data(load_recipe(tiny_recipe).data, tiny_recipe["teacher"]["model"])
    recipe = _augment(tiny_recipe, copies=3, replace_prob=0.5, seed=1)
    data = load_data(recipe.data, recipe.teacher.model)
    for split in ("validation", "test"):
        assert list(data.splits[split]["text"]) == list(plain.splits[split]["text"])
        assert list(data.splits[split]["label"]) == list(plain.splits[split]["label"])
    n = len(plain.splits["train"])
    train = {column: list(data.splits["train"][column]) for column in ("text", "label")}
    assert train["text"][:n] == list(plain.splits["train"]["text"])
    assert train["label"][:n] == list(plain.splits["train"]["label"])
    held_out = set(plain.splits["validation"]["text"]) | set(plain.splits["test"]["text"])
    assert len(train["text"]) - n == data.composition["augmented"] and 0 < data.composition["augmented"] <= 3 * n
    assert not set(train["text"][n:]) & held_out
    assert set(train["label"][n:]) == {NO_LABEL}
    assert data.composition["labelled"] == n
    kept = load_data(_augment(tiny_recipe, copies=3, replace_prob=0.5, seed=1, keep_labels=True).data,
                     recipe.teacher.model)
    assert list(kept.splits["train"]["text"]) == train["text"]
    assert NO_LABEL not in kept.splits["train"]["label"]


def test_collator_gives_rows_without_a_label_the_ignored_index():
    batch = DataCollator(0)([{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 1},
                             {"input_ids": [5], "attention_mask": [1], "labels": NO_LABEL}])
    assert batch["labels"].tolist() == [1, -100]


def test_unlabeled_rows_contribute_only_teacher_terms():
    """CE skips a row without a label; KD still learns from it."""
    logits = torch.randn(2, 2, requires_grad=True)
    student = type("Reps", (), {"logits": logits})()
    teacher = type("Reps", (), {"logits": torch.randn(2, 2)})()
    ce = TERMS["ce"](TERMS["ce"].config(name="ce"))
    kd = TERMS["kd"](TERMS["kd"].config(name="kd"))
    batch = {"labels": torch.tensor([1, -100])}
    ce(student, None, batch).backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    assert ce(student, None, {"labels": torch.tensor([-100, -100])}).item() == 0
    logits.grad = None
    kd(student, teacher, batch).backward()
    assert logits.grad[1].abs().sum() > 0


def test_unlabeled_file_rows_are_added_and_held_out_texts_dropped(tiny_recipe, tmp_path):
    plain = load_data(load_recipe(tiny_recipe).data)
    test_text = plain.splits["test"]["text"][0]
    (tmp_path / "more.txt").write_text(f"an unseen great film\n\n{test_text}\nan unseen great film\nboring plot\n")
    tiny_recipe["data"]["unlabeled"] = {"file": str(tmp_path / "more.txt")}
    data = load_data(load_recipe(tiny_recipe).data)
    assert list(data.splits["train"]["text"])[len(plain.splits["train"]):] == ["an unseen great film", "boring plot"]
    assert data.composition == {"labelled": len(plain.splits["train"]), "unlabeled": 2}
    (tmp_path / "more.jsonl").write_text(json.dumps({"body": "a dull movie"}) + "\n" + json.dumps({"body": ""}))
    tiny_recipe["data"]["unlabeled"] = {"file": str(tmp_path / "more.jsonl"), "text_column": "body"}
    with pytest.raises(DataError, match="line 2"):
        load_data(load_recipe(tiny_recipe).data)


def test_rotten_tomatoes_ships_plot_summaries_as_unlabeled_text():
    from kdkit.tasks.classification import load_named_dataset

    plots = load_unlabeled(corpus="rotten_tomatoes")
    reviews = load_named_dataset("rotten_tomatoes").splits
    assert len(plots) > 1000
    assert not set(plots) & {*reviews["train"]["text"], *reviews["test"]["text"]}
    with pytest.raises(ConfigError, match="ships no unlabeled texts"):
        load_unlabeled(corpus="bbc_news")


@pytest.mark.parametrize("change, message", [
    ({"losses": [{"name": "ce"}]}, "no loss that reads one"),
    ({"losses": [{"name": "rwkd"}]}, "needs a gold label on every training row"),
    ({"losses": [{"name": "kd"}, {"name": "beta_smoothing"}]}, "losses\\[1\\] 'beta_smoothing'"),
])
def test_recipes_whose_losses_cannot_learn_from_teacher_labelled_rows_are_refused(tiny_recipe, change, message):
    tiny_recipe.update(change)
    tiny_recipe["data"]["augment"] = {"copies": 2}
    with pytest.raises(ConfigError, match=message):
        load_recipe(tiny_recipe)


def test_unlabeled_corpus_needs_a_named_dataset(tiny_recipe):
    tiny_recipe["data"]["unlabeled"] = {"corpus": True}
    with pytest.raises(ConfigError, match="data.unlabeled.file"):
        load_recipe(tiny_recipe)


def test_teacher_is_fine_tuned_on_the_labelled_rows_only(tiny_recipe, monkeypatch):
    seen = []
    real_tokenize = task_module.tokenize

    def spy(splits, tokenizer, max_length, *args, **kwargs):
        seen.append(len(splits["train"]))
        return real_tokenize(splits, tokenizer, max_length, *args, **kwargs)

    # settings no other test uses: the teacher store is shared by the session's tests
    tiny_recipe["teacher"]["finetune"] = {"max_steps": 1, "report_to": [], "learning_rate": 4e-5}
    plain = load_recipe(tiny_recipe)
    augmented = _augment(tiny_recipe, copies=2)
    monkeypatch.setattr(task_module, "tokenize", spy)
    data = load_data(augmented.data, augmented.teacher.model)
    path = TASK.finetune_teacher(augmented, data)
    assert seen == [data.composition["labelled"]] and len(data.splits["train"]) > seen[0]
    assert TASK.finetune_teacher(plain, load_data(plain.data)) == path  # the same teacher as without augmentation


def test_distill_with_augmented_and_unlabeled_rows_caches_every_copy(tiny_recipe, tmp_path, capsys):
    (tmp_path / "more.txt").write_text("an unseen great film\nboring plot\n")
    tiny_recipe["data"]["augment"] = {"copies": 2, "replace_prob": 0.6}
    tiny_recipe["data"]["unlabeled"] = {"file": str(tmp_path / "more.txt")}
    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}]
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    recipe = load_recipe(tiny_recipe)
    data = load_data(recipe.data, recipe.teacher.model)
    counts = data.composition
    assert report["training_examples"] == (f"{counts['labelled']} labelled, {counts['augmented']} augmented, "
                                           f"{counts['unlabeled']} unlabeled")
    prep = TASK.prepare(recipe)
    train = TASK.tokenize(prep)["train"]
    keys = {example_key(real_token_ids(example)) for example in train}
    assert len(keys) > counts["labelled"]  # the copies are distinct cache entries, not the originals again
    assert build_teacher_cache(TASK, recipe)["examples"] == len(keys)  # the run's cache holds every one
    digest = json.loads((tmp_path / "run" / "train_data.json").read_text())
    assert digest["examples"] == len(train)


def test_a_run_with_augmented_rows_resumes_to_the_weights_of_an_uninterrupted_run(tiny_recipe, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    from kdkit import api

    tiny_recipe["data"]["augment"] = {"copies": 2, "replace_prob": 0.6}
    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}]
    tiny_recipe["training"].update(max_steps=4, save_steps=2, report_to=[])
    api.distill(tiny_recipe)
    run = tmp_path / "run"
    uninterrupted = load_file(run / "student" / "model.safetensors")
    # as if killed after checkpoint-2: the copies are made again, from their seed, and the run picks up there
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "student")
    (run / "report.json").unlink()
    api.distill(tiny_recipe, resume=True)
    assert "resuming from" in capsys.readouterr().out
    resumed = load_file(run / "student" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)
