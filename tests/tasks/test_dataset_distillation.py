"""Dataset distillation: the unrolled meta-gradient, soft labels on the simplex, the task end to end on digits,
the saved set, resume, refusals."""

from __future__ import annotations

import json
import types

import pytest
import torch
from torch import nn

from kdkit.config import load_recipe
from kdkit.engine.pipeline import RunInterrupted
from kdkit.errors import ConfigError
from kdkit.losses.distilled_data import (distillation_loss, project_to_simplex, softplus_inverse,
                                         train_on_synthetic, unrolled_parameters)
from kdkit.tasks import get_task
from kdkit.tasks.dataset_distillation import load_distilled, train_on_distilled
from kdkit.tasks.dataset_distillation import task as dd_task
from kdkit.tasks.dataset_distillation.data import load_images
from kdkit.tasks.dataset_distillation.models import build_model
from kdkit.tasks.dataset_distillation.task import accuracy, random_subset


def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    samples = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.softmax(torch.randn(4, 3, dtype=torch.float64), -1).requires_grad_()
    rates = torch.tensor([0.3, 0.2, 0.25, 0.1], dtype=torch.float64, requires_grad=True)
    real, labels = torch.randn(16, 4, dtype=torch.float64), torch.randint(3, (16,))
    return model, params, samples, targets, rates, real, labels


def test_unrolled_meta_gradient_matches_finite_differences():
    model, params, samples, targets, rates, real, labels = _tiny_problem()
    loss = distillation_loss(model, params, samples, targets, rates, 2, real, labels)
    grads = torch.autograd.grad(loss, [samples, targets, rates])
    for tensor, grad in zip((samples, targets, rates), grads):
        for index in [(0,) * tensor.dim(), tuple(s - 1 for s in tensor.shape)]:
            eps, values = 1e-6, []
            for shift in (eps, -2 * eps, eps):
                with torch.no_grad():
                    tensor[index] += shift
                values.append(distillation_loss(model, params, samples, targets, rates, 2, real, labels).item())
            up, down = values[0], values[1]
            assert grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_unrolled_steps_are_plain_sgd_on_the_batches_in_turn():
    model, params, samples, targets, rates, _, _ = _tiny_problem()
    final = unrolled_parameters(model, params, samples, targets, rates, 2, create_graph=False)
    expected = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    expected.load_state_dict({k: v.detach() for k, v in params.items()})
    optimizer = torch.optim.SGD(expected.parameters(), lr=1.0)
    for t, rate in enumerate(rates.tolist()):
        part = slice(2 * (t % 2), 2 * (t % 2) + 2)
        optimizer.zero_grad()
        (-(targets[part].detach() * torch.log_softmax(expected(samples[part].detach()), -1)).sum(-1).mean()
         * rate).backward()
        optimizer.step()
    for name, value in expected.named_parameters():
        assert torch.allclose(final[name], value, atol=1e-12)
    with pytest.raises(ValueError, match="do not split into 3 steps"):
        unrolled_parameters(model, params, samples, targets, rates, 3)


def test_projection_onto_the_simplex_by_hand():
    rows = torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0], [0.6, 0.6, -1.0], [0.2, 0.3, 0.5], [-1.0, -2.0, -3.0]])
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5],
                             [1.0, 0.0, 0.0]])
    assert torch.allclose(project_to_simplex(rows), expected, atol=1e-6)
    assert softplus_inverse(0.01) == pytest.approx(float(torch.log(torch.expm1(torch.tensor(0.01)))), rel=1e-5)


def test_named_image_sets_have_fixed_stratified_splits():
    data = load_images("digits")
    sizes = {split: len(labels) for split, (_, labels) in data.splits.items()}
    assert sizes == {"train": 1259, "validation": 179, "test": 359}
    assert data.shape == (1, 8, 8) and data.classes[3] == "3"
    assert abs(float(data["train"][0].mean())) < 1e-4 and float(data["train"][0].std()) == pytest.approx(1, abs=1e-3)
    again = load_images("digits", max_train_samples=100, seed=1)
    assert len(again["train"][1]) == 100 and torch.equal(again["test"][1], data["test"][1])
    assert torch.bincount(again["train"][1]).min() >= 9
    subset = random_subset(data["train"][1], 25, 10, seed=3)
    assert sorted(torch.bincount(data["train"][1][subset], minlength=10).tolist()) == [2] * 5 + [3] * 5


def _recipe(tmp_path, **changes) -> dict:
    recipe = {"task": "dataset_distillation", "name": "dd", "output_dir": str(tmp_path / "run"),
              "data": {"dataset": "digits", "max_train_samples": 300},
              "distill": {"samples": 10, "epochs": 2},
              "training": {"iterations": 6, "batch_size": 64, "save_steps": 3, "logging_steps": 2},
              "evaluation": {"models": 2, "full_epochs": 1, "subset_steps": 5, "latency_batch_sizes": [1],
                             "latency_repeats": 1}}
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value}
    return recipe


def test_distillation_end_to_end_saves_a_set_that_reproduces_its_accuracy(tmp_path):
    report = get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path)))
    run = tmp_path / "run"
    assert report["primary_metric"] == "accuracy" and report["student"]["metrics"]["accuracy"] == \
        report["student"]["accuracy_fixed_init"]
    assert set(report["variants"]) == {"random real subset"}
    assert len(report["distilled"]["learning_rates"]) == 2
    tensors, meta = load_distilled(run / "distilled")
    labels = tensors["labels"]
    assert tensors["images"].shape == (10, 1, 8, 8) and meta["classes"][0] == "0"
    assert torch.allclose(labels.sum(-1), torch.ones(10), atol=1e-5) and bool((labels >= 0).all())
    assert not torch.equal(labels, torch.eye(10))  # soft labels learnt
    model = train_on_distilled(build_model("lenet", (1, 8, 8), 10, seed=0), run / "distilled")
    test_x, test_y = load_images("digits")["test"]
    assert accuracy(model, test_x, test_y) == report["student"]["accuracy_fixed_init"]
    assert (run / "distilled" / "grid.png").stat().st_size > 1000
    assert "random real subset" in (run / "report.md").read_text()
    log = json.loads((run / "metrics.json").read_text())
    assert [entry["iteration"] for entry in log] == [1, 2, 4, 6]


def test_hard_labels_stay_one_hot(tmp_path):
    report = get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path, distill={"labels": "hard"},
                                                                      training={"iterations": 2})))
    tensors, _ = load_distilled(tmp_path / "run" / "distilled")
    assert torch.equal(tensors["labels"], torch.eye(10))
    assert "hard labels" in report["student"]["name"]


def test_an_interrupted_run_resumes_to_the_same_set(tmp_path, monkeypatch):
    task = get_task("dataset_distillation")
    task.run(load_recipe(_recipe(tmp_path / "a")))
    straight = load_distilled(tmp_path / "a" / "run" / "distilled")[0]
    step, calls = type(task)._step, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint at iteration 3
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(type(task), "_step", staticmethod(interrupted))
    with pytest.raises(RunInterrupted):
        task.run(load_recipe(_recipe(tmp_path / "b")))
    monkeypatch.setattr(type(task), "_step", staticmethod(step))
    task.run(load_recipe(_recipe(tmp_path / "b")), resume=True)
    resumed = load_distilled(tmp_path / "b" / "run" / "distilled")[0]
    for name in ("images", "labels", "learning_rates"):
        assert torch.allclose(straight[name], resumed[name], atol=1e-6), name


def test_train_seconds_add_up_over_a_resume_without_the_lost_iterations(tmp_path, monkeypatch):
    """A fake clock moves 10 s per outer iteration: 6 iterations, one of them lost to the interrupt (it came after
    the checkpoint at iteration 3), give 60 s, not 70 and not the 30 of the resumed process alone."""
    task, clock = get_task("dataset_distillation"), [0.0]
    step, calls = type(task)._step, []

    def timed(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        clock[0] += 10.0
        return step(*args)

    monkeypatch.setattr(dd_task, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(type(task), "_step", staticmethod(timed))
    with pytest.raises(RunInterrupted):
        task.run(load_recipe(_recipe(tmp_path)))
    report = task.run(load_recipe(_recipe(tmp_path)), resume=True)
    assert report["train_seconds"] == 60.0
    assert "train_seconds: 60.0" in (tmp_path / "run" / "report.md").read_text()


def test_keep_best_saves_the_set_of_the_best_validation_check(tmp_path, monkeypatch):
    import kdkit.tasks.dataset_distillation.task as module

    scores = iter([0.5, 0.9, 0.7])  # checks at iterations 2, 4, 6: the one at 4 is kept
    monkeypatch.setattr(module, "validation_score", lambda *args: next(scores))
    report = get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path / "best", training={
        "keep": "best", "eval_steps": 2})))
    assert report["distilled"]["selected_iteration"] == 4
    assert report["distilled"]["selected_validation_accuracy"] == 0.9
    checks = json.loads((tmp_path / "best" / "run" / "validation.json").read_text())
    assert [c["iteration"] for c in checks] == [2, 4, 6]
    assert (tmp_path / "best" / "run" / "validation.png").stat().st_size > 1000
    get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path / "four", training={"iterations": 4})))
    kept = load_distilled(tmp_path / "best" / "run" / "distilled")[0]
    at_four = load_distilled(tmp_path / "four" / "run" / "distilled")[0]
    last = get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path / "last")))
    assert last["distilled"]["kept"] == "last" and "selected_iteration" not in last["distilled"]
    final = load_distilled(tmp_path / "last" / "run" / "distilled")[0]
    for name in ("images", "labels", "learning_rates"):
        assert torch.equal(kept[name], at_four[name]), name
    assert not torch.equal(kept["images"], final["images"])


def test_keep_best_scores_the_validation_split_and_survives_a_resume(tmp_path, monkeypatch):
    task = get_task("dataset_distillation")
    best = {"keep": "best", "eval_steps": 2}
    report = task.run(load_recipe(_recipe(tmp_path / "a", training=best)))
    kept, meta = load_distilled(tmp_path / "a" / "run" / "distilled")
    model = train_on_distilled(build_model("lenet", (1, 8, 8), 10, seed=0), tmp_path / "a" / "run" / "distilled")
    validation = load_images("digits", max_train_samples=300)["validation"]
    assert accuracy(model, *validation) == report["distilled"]["selected_validation_accuracy"]
    checks = json.loads((tmp_path / "a" / "run" / "validation.json").read_text())
    assert max(c["accuracy"] for c in checks) == report["distilled"]["selected_validation_accuracy"]
    step, calls = type(task)._step, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint at iteration 3, which holds the check at 2
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(type(task), "_step", staticmethod(interrupted))
    with pytest.raises(RunInterrupted):
        task.run(load_recipe(_recipe(tmp_path / "b", training=best)))
    monkeypatch.setattr(type(task), "_step", staticmethod(step))
    resumed = task.run(load_recipe(_recipe(tmp_path / "b", training=best)), resume=True)
    assert json.loads((tmp_path / "b" / "run" / "validation.json").read_text()) == checks
    assert resumed["distilled"]["selected_iteration"] == report["distilled"]["selected_iteration"]
    again = load_distilled(tmp_path / "b" / "run" / "distilled")[0]
    for name in ("images", "labels", "learning_rates"):
        assert torch.allclose(kept[name], again[name], atol=1e-6), name


@pytest.mark.parametrize("changes, message", [
    ({"distill": {"samples": 10, "steps": 3}}, "samples 10 must split evenly into steps 3"),
    ({"distill": {"labels": "hard", "label_init": "random"}}, "label_init 'random' goes with labels 'soft'"),
    ({"data": {"dataset": "cifar"}}, "data.dataset"),
])
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path, **changes)))
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("labels", ["soft", "hard"])
def test_fewer_samples_than_classes(tmp_path, labels):
    report = get_task("dataset_distillation").run(load_recipe(_recipe(tmp_path, distill={"samples": 5,
                                                                                         "labels": labels},
                                                                      training={"iterations": 2})))
    saved = load_distilled(tmp_path / "run" / "distilled")[0]["labels"]
    assert saved.shape == (5, 10) and torch.allclose(saved.sum(-1), torch.ones(5), atol=1e-5)
    if labels == "hard":  # one-hot on classes 0..4; 5..9 have no sample
        assert torch.equal(saved, torch.eye(10)[:5])
    assert 0 <= report["student"]["metrics"]["accuracy"] <= 1


def test_train_on_synthetic_leaves_the_synthetic_tensors_alone():
    model = build_model("lenet", (1, 8, 8), 10, seed=1)
    samples, labels = torch.randn(4, 1, 8, 8), torch.eye(10)[:4]
    before = samples.clone()
    trained = train_on_synthetic(model, samples, labels, torch.tensor([0.1, 0.1]), 2)
    assert trained is model and torch.equal(samples, before)
    assert not torch.equal(trained.fc3.weight, build_model("lenet", (1, 8, 8), 10, seed=1).fc3.weight)


def test_text_sets_distil_sentences_in_an_embedding_space(tmp_path):
    from tiny import make_tiny_teacher

    embedding = make_tiny_teacher(tmp_path / "encoder")
    recipe = _recipe(tmp_path, data={"dataset": "rotten_tomatoes", "max_length": 8, "embedding": str(embedding),
                                     "max_train_samples": 200},
                     distill={"samples": 4, "steps": 2}, training={"iterations": 3})
    report = get_task("dataset_distillation").run(load_recipe(recipe))
    assert "4 distilled sentences" in report["student"]["name"] and "textcnn" in report["student"]["name"]
    tensors, meta = load_distilled(tmp_path / "run" / "distilled")
    assert tensors["images"].shape[:2] == (4, 8) and tensors["labels"].shape == (4, 2)
    assert len(meta["nearest_words"]) == 4 and all(len(words.split()) == 8 for words in meta["nearest_words"])
    assert not (tmp_path / "run" / "distilled" / "grid.png").exists()
    with pytest.raises(ConfigError, match="'lenet' reads images but data.dataset 'rotten_tomatoes' is text"):
        load_recipe({**recipe, "model": {"name": "lenet"}})


def test_a_comparison_draws_accuracy_against_the_number_of_samples(tmp_path):
    from PIL import Image

    from kdkit import api

    base = _recipe(tmp_path, training={"iterations": 2})
    comparison = {"name": "dd-sizes", "output_dir": str(tmp_path / "cmp"), "seeds": [0],
                  "runs": [{"name": f"{n} images", "recipe": base, "set": [f"distill.samples={n}"]} for n in (5, 10)]}
    board = api.compare(comparison)
    [figure] = board["figures"]
    assert figure["caption"] == "test accuracy vs training samples"
    with Image.open(figure["path"]) as image:
        assert image.format == "PNG" and image.size[0] > 300
    page = api.compare_document([comparison], tmp_path / "doc" / "results.md")
    assert "![dd-sizes: test accuracy vs training samples](results/dd-sizes-1.png)" in page.read_text()
    assert (tmp_path / "doc" / "results" / "dd-sizes-1.png").is_file()


def test_samples_figure_counts_each_seeds_subset_once(tmp_path, monkeypatch):
    from kdkit.tasks.dataset_distillation import figures

    drawn = {}

    def fake_errorbar(self, sizes, means, yerr=None, label=None, **kwargs):
        drawn[label] = (list(sizes), [round(m, 6) for m in means], [round(e, 6) for e in yerr])

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    monkeypatch.setattr(Axes, "errorbar", fake_errorbar)
    rows = []
    for labels in ("soft", "hard"):
        for size in (5, 10):
            dirs = []
            for seed, subset in enumerate((0.4, 0.5)):
                folder = tmp_path / f"{labels}{size}" / f"seed-{seed}"
                folder.mkdir(parents=True)
                accuracy = 0.9 if labels == "soft" else 0.6
                (folder / "report.json").write_text(json.dumps({
                    "distilled": {"samples": size, "labels": labels, "init": "fixed"},
                    "student": {"metrics": {"accuracy": accuracy + seed / 100}},
                    "variants": {"random real subset": {"metrics": {"accuracy": subset + size / 100}}},
                    "teacher": {"metrics": {"accuracy": 0.98}}}))
                dirs.append(str(folder))
            rows.append({"role": "student", "dirs": dirs})
    assert figures.samples_figure({"rows": rows}, tmp_path / "samples.png") == tmp_path / "samples.png"
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert drawn["distilled, soft labels (fixed init)"][:2] == ([5, 10], [90.5, 90.5])
    # the soft and hard runs share each seed's subset: the spread is over the two seeds, not four copies
    sizes, means, stds = drawn["random real subset"]
    assert sizes == [5, 10] and means == [50.0, 55.0] and stds == pytest.approx([7.071068, 7.071068])
