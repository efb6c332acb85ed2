"""The Python API around the teacher cache: cached and live training agree, stale caches are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kdkit import api
from kdkit.errors import CacheError


def _losses(run_dir):
    checkpoint = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "loss" in h]


@pytest.mark.parametrize("losses, tolerance", [
    ([{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}], 1e-5),
    ([{"name": "kd"}, {"name": "hidden_mse", "layer_map": "uniform"}, {"name": "pkd", "pooling": "mean"}], 2e-3),
])
def test_cached_and_live_teacher_give_the_same_losses(tiny_recipe, tmp_path, monkeypatch, losses, tolerance):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    tiny_recipe["losses"] = losses
    tiny_recipe["training"].update(max_steps=4, logging_steps=1, save_steps=4)
    runs = {}
    for mode in ("off", "auto"):
        recipe = dict(tiny_recipe, output_dir=str(tmp_path / mode), teacher=dict(tiny_recipe["teacher"], cache=mode))
        api.distill(recipe)
        runs[mode] = _losses(tmp_path / mode)
    assert len(list((tmp_path / "cache" / "signals").iterdir())) == 1, "auto built exactly one cache"
    assert len(runs["off"]) == len(runs["auto"]) == 4
    for live, cached in zip(runs["off"], runs["auto"]):
        for key in live:
            if key.startswith("loss"):
                assert cached[key] == pytest.approx(live[key], rel=tolerance, abs=tolerance), key


def test_auto_falls_back_to_live_for_attention_terms(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    tiny_recipe["losses"] = [{"name": "kd"}, {"name": "attention_kl", "layer_map": "uniform"}]
    api.distill(tiny_recipe)
    assert "teacher runs live" in capsys.readouterr().out
    assert not (tmp_path / "cache" / "signals").exists()


def test_explicit_cache_dir_refuses_a_changed_teacher(tiny_recipe, tiny_teacher, tmp_path):
    tiny_recipe["teacher"]["cache"] = str(tmp_path / "tc")
    result = api.cache(tiny_recipe)
    assert result["examples"] > 0 and result["bytes"] > 0
    changed = tmp_path / "teacher2"
    changed.mkdir()
    for f in tiny_teacher.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    weights = load_file(changed / "model.safetensors")
    key = next(k for k in weights if k.endswith("classifier.bias"))
    weights[key] = weights[key] + 1.0
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    tiny_recipe["teacher"]["model"] = str(changed)
    with pytest.raises(CacheError, match="the teacher weights"):
        api.distill(tiny_recipe)
    assert not (tmp_path / "run").exists()
    assert api.cache(tiny_recipe, rebuild=True)["examples"] == result["examples"]


def test_explicit_cache_dir_refuses_changed_data(tiny_recipe, tmp_path):
    tiny_recipe["teacher"]["cache"] = str(tmp_path / "tc")
    tiny_recipe["data"]["max_train_samples"] = 20
    api.cache(tiny_recipe)
    tiny_recipe["data"]["max_train_samples"] = 40
    with pytest.raises(CacheError, match="not in the teacher cache"):
        api.distill(tiny_recipe)


def test_cache_refuses_recipes_it_cannot_serve(tiny_recipe):
    from kdkit.errors import ConfigError

    tiny_recipe["teacher"]["cache"] = "off"
    with pytest.raises(ConfigError, match="teacher.cache is 'off'"):
        api.cache(tiny_recipe)
    tiny_recipe["teacher"]["cache"] = "/tmp/somewhere"
    tiny_recipe["losses"] = [{"name": "attention_kl", "layer_map": "uniform"}]
    with pytest.raises(ConfigError, match="attention maps"):
        api.cache(tiny_recipe)
    assert torch.get_num_threads() >= 1
