"""The multimodal task (issue 19): MSD end to end on tiny random encoders, cached views equal live ones, the per-
modality terms vanish for a student equal to its teacher, the learned weights move, resume, export, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file

from kdkit.config import load_recipe
from kdkit.errors import ConfigError
from kdkit.tasks import get_task
from kdkit.tasks.multimodal import load_saved_model
from kdkit.tasks.multimodal.task import (CachedViews, LiveViews, MultimodalCollator, all_views, build_inputs,
                                         kinds_of, load_data, score_model, tabular_specs)
from kdkit.tasks.multimodal.encoders import empty_text
from kdkit.terms import build_terms
from tiny import make_tiny_multimodal, make_tiny_teacher, run_cli, write_recipe


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multimodal")
    return make_tiny_teacher(root / "bert"), make_tiny_multimodal(root / "data")


def _recipe(tiny_files, tmp_path, weighting="instance", **changes) -> dict:
    bert, csv = tiny_files
    recipe = {
        "task": "multimodal",
        "data": {"train_file": str(csv), "image_size": 16, "max_length": 16,
                 "modalities": {"picture": {"kind": "image", "column": "image"},
                                "words": {"kind": "text", "column": "text"},
                                "table": {"kind": "tabular", "numeric": ["age"], "categorical": ["shop"]}}},
        "teacher": {"image": "small_cnn", "image_width": 8, "text": str(bert), "hidden": 16, "tabular_dim": 8,
                    "finetune": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-2, "report_to": ["none"]}},
        "student": {"image": "small_cnn", "image_width": 4, "text": str(bert), "text_layers": [0], "hidden": 8,
                    "tabular_dim": 4},
        "losses": [{"name": "ce"}, {"name": "kd"}, {"name": "msd", "weighting": weighting, "meta_fraction": 0.2}],
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 2, "save_steps": 2,
                     "report_to": ["none"]},
        "evaluation": {"latency_batch_sizes": [1, 4], "latency_repeats": 2},
        "output_dir": str(tmp_path / "run"),
    }
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    return recipe


@pytest.mark.parametrize("weighting", ["equal", "population", "instance", "learned"])
def test_msd_runs_end_to_end_and_exports_a_student_that_reloads(tiny_files, tmp_path, weighting):
    recipe = load_recipe(_recipe(tiny_files, tmp_path, weighting))
    report = get_task("multimodal").run(recipe)
    out = Path(recipe.output_dir)
    log = json.loads((out / "metrics.json").read_text())
    assert any("loss_msd" in row and "msd_w2" in row for row in log)
    assert set(report["saliency"]) == {"picture", "words", "table"}
    assert sum(report["msd_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    if weighting == "equal":
        assert all(w == pytest.approx(1 / 3, abs=1e-3) for w in report["msd_weights"].values())
    if weighting == "population":  # the training split's mean saliency, normalised
        total = sum(report["saliency_train"].values())
        assert report["msd_weights"] == pytest.approx({m: s / total for m, s in report["saliency_train"].items()},
                                                      abs=1e-3)
    assert {"picture_only_accuracy", "words_only_accuracy", "table_only_accuracy"} < set(report["student"]["metrics"])
    # the exported student gives the logits the trained one gave
    model, tokenizer, info = load_saved_model(out / "student")
    assert info["label_names"] == ["neg", "pos"] and tokenizer is not None
    data = load_data(recipe.data)
    inputs = build_inputs(data, {"student": tokenizer}, tabular_specs(data), max_length=16, image_size=16)
    scores = score_model(model, inputs["test"]["student"], list(data.splits["test"]["label"]), kinds_of(data),
                         {"words": empty_text(tokenizer)}, 16)
    assert scores["metrics"]["accuracy"] == pytest.approx(report["student"]["metrics"]["accuracy"])


def test_learned_weights_are_trained_by_the_meta_step_only(tiny_files, tmp_path):
    recipe = load_recipe(_recipe(tiny_files, tmp_path, "learned"))
    task = get_task("multimodal")
    prep, splits, _ = task.prepare_all(recipe)
    term = next(t for t in prep.module.terms if t.name == "msd")
    assert len(splits["train"]) < len(prep.data.splits["train"])  # the meta split left training
    assert not any(p.requires_grad for p in term.weight_net.parameters())
    before = [p.clone() for p in term.weight_net.parameters()]
    teacher = task.teacher_signals(prep, splits["train"])
    batch = task.collator(prep)([splits["train"][i] for i in range(8)])
    prep.module.train()
    total, values, _ = prep.module(batch, teacher(batch))
    total.backward()
    assert any(not torch.equal(a, b) for a, b in zip(before, term.weight_net.parameters()))
    assert all(p.grad is None for p in term.weight_net.parameters())


def test_cached_views_equal_live_ones_and_terms_vanish_for_a_student_equal_to_its_teacher(tiny_files, tmp_path):
    recipe = load_recipe(_recipe(tiny_files, tmp_path))
    task = get_task("multimodal")
    prep, splits, _ = task.prepare_all(recipe)
    cached = task.teacher_signals(prep, splits["train"])
    assert isinstance(cached, CachedViews)
    live_recipe = load_recipe(_recipe(tiny_files, tmp_path, teacher={"cache": "off"}))
    live_prep, live_splits, _ = task.prepare_all(live_recipe)
    live = task.teacher_signals(live_prep, live_splits["train"])
    assert isinstance(live, LiveViews)
    batch = task.collator(live_prep)([live_splits["train"][i] for i in range(6)])
    a, b = cached(batch), live(batch)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.modules["views"], b.modules["views"], atol=1e-5)
    assert torch.allclose(a.modules["saliency"], b.modules["saliency"], atol=1e-5)
    assert torch.allclose(a.modules["population"], live.population, atol=1e-6)
    # a student that is the teacher: every distillation term is 0 on the teacher's own views
    teacher = live_prep.teacher
    terms = build_terms(live_recipe.losses, teacher, teacher)
    forward = task.student_forward(live_recipe, kinds_of(live_prep.data), live_prep.extras["empty"]["teacher"],
                                   role="teacher")
    from kdkit.capture import Capture

    teacher.eval()
    with torch.no_grad():
        student = forward(Capture(teacher), batch)
        values = {t.name: float(t(student, b, batch)) for t in terms}
    assert values["kd"] == pytest.approx(0.0, abs=1e-6) and values["msd"] == pytest.approx(0.0, abs=1e-6)
    assert values["ce"] > 0


def test_kdkit_cache_stores_the_views_a_run_then_reads(tiny_files, tmp_path, monkeypatch, capsys):
    from kdkit import api

    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(tiny_files, tmp_path)
    built = api.cache(recipe)
    views = load_file(Path(built["path"]) / "views.safetensors")
    assert built["examples"] == views["full"].shape[0] and built["bytes"] > 0
    capsys.readouterr()
    task = get_task("multimodal")
    prep, splits, _ = task.prepare_all(load_recipe(recipe))
    signals = task.teacher_signals(prep, splits["train"])
    assert "caching the teacher's logits" not in capsys.readouterr().out  # the run found the entry kdkit cache made
    assert torch.equal(signals.views["full"], views["full"])
    assert len(list((tmp_path / "cache" / "signals").iterdir())) == 1
    assert api.cache(recipe, rebuild=True)["path"] == built["path"]
    assert "caching the teacher's logits" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="teacher.cache is 'off'"):
        api.cache(_recipe(tiny_files, tmp_path, teacher={"cache": "off"}))


def test_saliency_of_a_modality_the_teacher_ignores_is_zero(tiny_files, tmp_path):
    """A teacher whose head reads only the image features: removing text or table changes nothing."""
    recipe = load_recipe(_recipe(tiny_files, tmp_path))
    prep, _, _ = get_task("multimodal").prepare_all(recipe)
    teacher = prep.teacher
    first = teacher.head[1]
    width = teacher.encoders["picture"].dim
    with torch.no_grad():
        first.weight[:, width:] = 0
    data, kinds = prep.data, prep.extras["kinds"]
    views = all_views(teacher, prep.extras["inputs"]["train"]["teacher"], list(data.splits["train"]["label"]),
                      kinds, prep.extras["empty"]["teacher"], 16)
    saliency = CachedViews(views).population
    assert saliency[1] == 0 and saliency[2] == 0 and saliency[0] > 0


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tiny_files, tmp_path, monkeypatch):
    whole = load_recipe(_recipe(tiny_files, tmp_path / "a", "learned"))
    get_task("multimodal").run(whole)
    cut = load_recipe(_recipe(tiny_files, tmp_path / "b", "learned"))
    from kdkit.engine.trainer import DistillationTrainer

    original = DistillationTrainer.compute_loss

    def stop_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "compute_loss", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        get_task("multimodal").run(cut)
    monkeypatch.setattr(DistillationTrainer, "compute_loss", original)
    get_task("multimodal").run(cut, resume=True)
    a = load_file(Path(whole.output_dir) / "student" / "model.safetensors")
    b = load_file(Path(cut.output_dir) / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_collator_gathers_rows_and_trims_text_padding(tiny_files, tmp_path):
    recipe = load_recipe(_recipe(tiny_files, tmp_path))
    data = load_data(recipe.data)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_files[0])
    inputs = build_inputs(data, {"student": tokenizer}, tabular_specs(data), max_length=16, image_size=16)
    labels = list(data.splits["train"]["label"])
    batch = MultimodalCollator(inputs["train"], labels)([{"index": 3}, {"index": 0}])
    assert batch["labels"].tolist() == [labels[3], labels[0]]
    words = batch["student"]["words"]
    assert words["attention_mask"][:, -1].any()  # no all-padding column left
    assert torch.equal(batch["student"]["picture"]["pixels"][0], inputs["train"]["student"]["picture"]["pixels"][3])


@pytest.mark.parametrize("change, message", [
    ({"data": {"modalities": {"words": {"kind": "audio", "column": "text"}}}}, "audio"),
    ({"data": {"modalities": {"words": {"kind": "text", "column": "caption"}}}}, "no column 'caption'"),
    ({"losses": [{"name": "hidden_mse"}]}, "unknown loss 'hidden_mse'; valid: ce, kd, soft_ce, logit_mse, msd"),
    ({"losses": [{"name": "msd", "weighting": "loudest"}]}, "loudest"),
    ({"teacher": {"model": "/nonexistent/teacher"}}, "exactly one of teacher.finetune"),
    ({"data": {"train_file": "/nonexistent/train.csv"}}, "/nonexistent/train.csv"),
], ids=["unknown-modality", "column-absent", "wrong-loss", "unknown-weighting", "teacher-twice", "no-file"])
def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tiny_files, tmp_path, capsys, monkeypatch, change,
                                                          message):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(tiny_files, tmp_path)
    for section, value in change.items():
        if section == "data" and "modalities" in value:
            recipe["data"]["modalities"] = {**recipe["data"]["modalities"], **value["modalities"]}
        elif isinstance(value, dict):
            recipe[section] = {**recipe[section], **value}
        else:
            recipe[section] = value
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "recipe.yaml", recipe))], capsys)
    lines = err.strip().splitlines()
    assert code == 2, err[-2000:]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert "Traceback" not in err
    assert not Path(recipe["output_dir"]).exists()


def test_a_missing_image_file_is_one_line(tiny_files, tmp_path, capsys):
    bert, csv = tiny_files
    folder = tmp_path / "data"
    folder.mkdir()
    rows = csv.read_text().splitlines()
    (folder / "train.csv").write_text("\n".join([rows[0]] + [f"{tiny_files[1].parent}/{r}" for r in rows[1:]]
                                                + ["gone.png,good movie,30,a,pos"]) + "\n")
    recipe = _recipe(tiny_files, tmp_path)
    recipe["data"]["train_file"] = str(folder / "train.csv")
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "recipe.yaml", recipe))], capsys)
    assert code == 2 and "gone.png" in err.strip().splitlines()[-1] and "is not a file" in err
    assert not Path(recipe["output_dir"]).exists()


def test_a_comparison_draws_each_runs_accuracy_per_view_and_its_weights(tiny_files, tmp_path):
    from PIL import Image

    from kdkit import api

    base = _recipe(tiny_files, tmp_path)
    del base["output_dir"]
    comparison = {"name": "msd-tiny", "output_dir": str(tmp_path / "cmp"), "seeds": [0, 1], "baseline": "KD",
                  "runs": [{"name": "KD", "recipe": base, "set": ["losses=[{name: ce}, {name: kd}]"]},
                           {"name": "MSD equal", "recipe": base, "set": ["losses.2.weighting=equal"]}]}
    board = api.compare(comparison)
    [figure] = board["figures"]
    assert figure["caption"].startswith("accuracy on the full input and on each modality alone")
    with Image.open(figure["path"]) as image:
        assert image.format == "PNG" and image.size[0] > 600
    students = {row["run"]: row for row in board["rows"] if row["role"] == "student"}
    assert set(students) == {"KD", "MSD equal"} and all(len(row["dirs"]) == 2 for row in students.values())
