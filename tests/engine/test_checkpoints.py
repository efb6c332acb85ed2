"""Atomic checkpoints: a checkpoint folder is complete or absent, and resume passes over partial ones."""

from __future__ import annotations

import pytest

from kdkit.engine.pipeline import check_output_dir as _check_output_dir
from kdkit.engine import DistillationTrainer
from kdkit.engine.checkpoints import MARKER, STAGING_DIR, commit, is_complete, last_complete_checkpoint
from kdkit.errors import ConfigError
from test_trainer import _trainer


def _sealed(folder, name, files=("model.safetensors", "optimizer.pt")):
    staged = folder / STAGING_DIR / name
    staged.mkdir(parents=True, exist_ok=True)
    for file in files:
        (staged / file).write_bytes(b"x" * 100)
    return commit(staged, folder / name)


def test_newest_complete_checkpoint_passes_over_partial_foreign_and_staged_ones(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    _sealed(tmp_path, "checkpoint-2")
    truncated = _sealed(tmp_path, "checkpoint-4")
    (truncated / "optimizer.pt").write_bytes(b"x" * 10)
    missing_file = _sealed(tmp_path, "checkpoint-6")
    (missing_file / "model.safetensors").unlink()
    unmarked = tmp_path / "checkpoint-8"  # as plain transformers writes it, or cut off mid-write
    unmarked.mkdir()
    (unmarked / "model.safetensors").write_bytes(b"x")
    (tmp_path / STAGING_DIR / "checkpoint-10").mkdir(parents=True)
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / MARKER).write_text("{not json")

    assert [is_complete(tmp_path / f"checkpoint-{n}") for n in (2, 4, 6, 8, 12)] == [True] + [False] * 4
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    # numeric order, not text order
    _sealed(tmp_path, "checkpoint-10")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_resume_is_refused_without_a_complete_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        _check_output_dir(tmp_path, resume=True, overwrite=False)


def test_a_save_cut_off_midway_leaves_no_checkpoint_and_resume_takes_the_last_complete_one(
        tiny_recipe, tmp_path, monkeypatch, capsys):
    tiny_recipe["training"].update(max_steps=4, save_steps=2, logging_steps=2, save_total_limit=5)
    out = tmp_path / "ckpt"
    _, trainer = _trainer(tiny_recipe, out)
    trainer.train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert all(is_complete(out / f"checkpoint-{n}") for n in (2, 4))

    # the newest checkpoint lost a file, and a save that died midway left its staging folder
    (out / "checkpoint-4" / "optimizer.pt").unlink()
    (out / STAGING_DIR / "checkpoint-6").mkdir(parents=True)
    (out / STAGING_DIR / "checkpoint-6" / "model.safetensors").write_bytes(b"partial")

    tiny_recipe["training"]["max_steps"] = 6
    _, resumed = _trainer(tiny_recipe, out)

    def dies_while_saving(self, output_dir):  # the process stops after the weights, before the RNG states
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(DistillationTrainer, "_save_rng_state", dies_while_saving)
        with pytest.raises(KeyboardInterrupt):
            resumed.train(resume_from_checkpoint=True)
    assert "resuming from" in capsys.readouterr().out
    assert resumed.state.global_step == 4, "resumed from checkpoint-2 and died saving checkpoint-4"
    assert (out / STAGING_DIR / "checkpoint-4" / "model.safetensors").is_file()
    assert not (out / STAGING_DIR / "checkpoint-6").exists()
    assert not is_complete(out / "checkpoint-4")
    assert last_complete_checkpoint(out) == out / "checkpoint-2"

    _, resumed = _trainer(tiny_recipe, out)
    resumed.train(resume_from_checkpoint=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all(is_complete(out / f"checkpoint-{n}") for n in (2, 4, 6))


def test_a_checkpoint_corrupted_at_the_same_size_is_passed_over_on_resume(tmp_path):
    _sealed(tmp_path, "checkpoint-2")
    newest = _sealed(tmp_path, "checkpoint-4")
    (newest / "model.safetensors").write_bytes(b"y" * 100)  # same size, other content
    assert last_complete_checkpoint(tmp_path) == newest  # sizes alone cannot tell
    assert last_complete_checkpoint(tmp_path, hashes=True) == tmp_path / "checkpoint-2"
