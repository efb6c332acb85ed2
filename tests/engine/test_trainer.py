"""The engine on tiny random models: what is trained, what is frozen, what is logged, saved and exported."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from kdkit.tasks.classification import load_data
from tiny import prepare
from kdkit.config import parse_recipe
from kdkit.engine import DistillationTrainer, training_arguments
from kdkit.signals import LiveTeacher
from kdkit.tasks.classification import DataCollator, tokenize

ALL_TERMS = [
    {"name": "ce", "weight": 0.5},
    {"name": "kd", "weight": 0.5, "temperature": 2.0},
    {"name": "hidden_mse", "layer_map": "uniform"},
    {"name": "pkd", "layer_map": "skip"},
    {"name": "attention_kl", "layer_map": "uniform"},
    {"name": "attention_mse", "layer_map": "last_k"},
    {"name": "value_relation", "relation_heads": 2},
]


def _trainer(recipe_dict, out, **arg_overrides):
    recipe = parse_recipe(recipe_dict)
    prep = prepare(recipe)
    train = tokenize(prep.data.splits, prep.tokenizer, recipe.data.max_length)["train"]
    args = training_arguments(recipe.training, out, **arg_overrides)
    teacher = LiveTeacher(prep.teacher, **prep.module.teacher_needs().capture_kwargs())
    trainer = DistillationTrainer(prep.module, args, teacher=teacher, train_dataset=train,
                                  data_collator=DataCollator(prep.tokenizer.pad_token_id))
    return prep, trainer


def test_narrow_student_all_terms_trains_student_and_projections_only(tiny_recipe, tmp_path):
    tiny_recipe["student"] = {"init": "config", "overrides": {"hidden_size": 16, "num_hidden_layers": 2,
                                                              "intermediate_size": 20}}
    tiny_recipe["losses"] = ALL_TERMS
    tiny_recipe["training"].update(max_steps=3, logging_steps=1, save_steps=3)
    prep, trainer = _trainer(tiny_recipe, tmp_path / "ckpt")
    teacher_before = {k: v.clone() for k, v in prep.teacher.state_dict().items()}
    projection = prep.module.terms[2].projection
    assert projection is not None and projection.in_features == 16 and projection.out_features == 32
    projection_before = projection.weight.detach().clone()

    trainer.train()

    assert all(torch.equal(v, prep.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not any(p.requires_grad for p in prep.teacher.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in prep.teacher.parameters()}
    assert id(projection.weight) in optimised
    assert not torch.equal(projection_before, projection.weight.detach())

    logged = [h for h in trainer.state.log_history if "loss" in h]
    names = {"ce", "kd", "hidden_mse", "pkd", "attention_kl", "attention_mse", "value_relation"}
    assert {f"loss_{n}" for n in names} <= set(logged[0])
    assert all(torch.isfinite(torch.tensor(h[f"loss_{n}"])) for h in logged for n in names)
    assert all(h["samples_per_second"] > 0 and h["steps_per_second"] > 0 for h in logged)

    checkpoint = load_file(tmp_path / "ckpt" / "checkpoint-3" / "model.safetensors")
    assert any("projection" in k for k in checkpoint), "projections are saved for resume"
    exported = trainer.export_student(tmp_path / "student", prep.tokenizer)
    reloaded = AutoModelForSequenceClassification.from_pretrained(exported)
    assert set(reloaded.state_dict()) == set(prep.student.state_dict())
    batch = DataCollator(0)([{"input_ids": [2, 5, 6, 3], "attention_mask": [1, 1, 1, 1], "labels": 0}])
    prep.student.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=batch["input_ids"]).logits,
                              prep.student(input_ids=batch["input_ids"]).logits, atol=1e-6)


def test_gradient_accumulation_matches_the_larger_batch(tiny_recipe, tmp_path):
    """One update with batch 8 equals one update with batch 4 accumulated twice (same examples, SGD)."""
    tiny_recipe["training"].update(max_steps=1, batch_size=8, learning_rate=0.1, weight_decay=0.0)
    # dropout off: microbatches draw dropout masks in a different order than one large batch
    tiny_recipe["student"] = {"init": "config", "overrides": {"num_hidden_layers": 2, "hidden_dropout_prob": 0.0,
                                                              "attention_probs_dropout_prob": 0.0}}
    common = dict(optim="sgd", save_strategy="no", lr_scheduler_type="constant")
    prep_a, trainer_a = _trainer(tiny_recipe, tmp_path / "a", **common)
    trainer_a.train()
    tiny_recipe["training"].update(batch_size=4, gradient_accumulation_steps=2)
    prep_b, trainer_b = _trainer(tiny_recipe, tmp_path / "b", **common)
    trainer_b.train()
    a, b = prep_a.student.state_dict(), prep_b.student.state_dict()
    before = _trainer(tiny_recipe, tmp_path / "c", **common)[0].student.state_dict()
    assert any(not torch.equal(a[k], before[k]) for k in a), "the update changed the student"
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_load_data_limits_training_examples(tiny_recipe):
    tiny_recipe["data"]["max_train_samples"] = 10
    data = load_data(parse_recipe(tiny_recipe).data)
    assert len(data.splits["train"]) == 10


def test_long_lived_objects_are_frozen_during_training_only(tiny_recipe, tmp_path):
    import gc

    from transformers import TrainerCallback

    seen = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(gc.get_freeze_count())

    tiny_recipe["training"].update(max_steps=2)
    _, trainer = _trainer(tiny_recipe, tmp_path / "ckpt", save_strategy="no")
    trainer.add_callback(Probe)
    trainer.train()
    assert len(seen) == 2 and all(count > 1000 for count in seen), seen
    assert gc.get_freeze_count() == 0


def test_trainer_progress_in_a_log_is_lines_not_redraws(tiny_recipe, tmp_path, capsys):
    from transformers.trainer_callback import ProgressCallback

    from kdkit.engine.trainer import _LogProgress

    tiny_recipe["training"].update(max_steps=3, logging_steps=1, save_steps=3)
    _, trainer = _trainer(tiny_recipe, tmp_path / "ckpt")  # under pytest standard error is not a terminal
    bars = [c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)]
    assert [type(c) for c in bars] == [_LogProgress]
    capsys.readouterr()
    trainer.train()
    err = capsys.readouterr().err
    assert "\r" not in err and "3/3" in err.splitlines()[-1]


def _fake_clock(trainer, seconds_per_step: float = 10.0) -> None:
    """The trainer's training-time clock advanced by ``seconds_per_step`` at every optimiser step, nothing else."""
    from transformers import TrainerCallback

    from kdkit.engine.trainer import _TrainTime

    now = [0.0]

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            now[0] += seconds_per_step

    timer = next(c for c in trainer.callback_handler.callbacks if isinstance(c, _TrainTime))
    timer.clock = lambda: now[0]
    trainer.add_callback(Tick)


def test_training_time_is_summed_over_a_resume_and_survives_checkpoints_from_before_it(tiny_recipe, tmp_path):
    import json
    import shutil

    tiny_recipe["training"].update(max_steps=4, save_steps=2)
    out = tmp_path / "ckpt"
    _, trainer = _trainer(tiny_recipe, out)
    _fake_clock(trainer)
    trainer.train()
    assert trainer.train_seconds == 40.0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["_TrainTime"]["attributes"]["seconds"] == 20.0

    # killed after checkpoint-2: the resumed process's 2 steps are added to the checkpoint's 20 s
    shutil.rmtree(out / "checkpoint-4")
    _, resumed = _trainer(tiny_recipe, out)
    _fake_clock(resumed)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4 and resumed.train_seconds == 40.0

    # a checkpoint written before kdkit kept the time (no entry): the resume works and counts its own steps only
    from kdkit.engine.trainer import _TrainTime

    shutil.rmtree(out)
    _, before = _trainer(tiny_recipe, out)
    before.remove_callback(_TrainTime)
    before.train()
    shutil.rmtree(out / "checkpoint-4")
    callbacks = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert "_TrainTime" not in callbacks
    _, resumed = _trainer(tiny_recipe, out)
    _fake_clock(resumed)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.train_seconds == 20.0
    saved = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["_TrainTime"]["attributes"]["seconds"] == 20.0
