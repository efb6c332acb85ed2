"""DynaBERT training (``student.adaptive``): config, the summed loss over sub-networks, rewiring in the pipeline,
the exported grid, its report and ``kdkit pick``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny import prepare, run_cli, tokenized
from transformers import AutoModelForSequenceClassification

from kdkit import api
from kdkit.config import parse_recipe
from kdkit.engine.adaptive import AdaptiveDistillationModule, span_ends
from kdkit.engine.stages import stage_recipes
from kdkit.engine.trainer import DistillationModule
from kdkit.errors import ConfigError
from kdkit.students.adaptive import kept_layers, sub_network
from kdkit.tasks.classification.data import DataCollator

ADAPTIVE = {"widths": [1.0, 0.5], "depths": [1.0, 0.5], "importance_examples": 16}


@pytest.fixture
def dyna(tiny_recipe):
    """The tiny recipe as a DynaBERT run: the whole teacher as the student, logits and hidden states distilled."""
    tiny_recipe["student"] = {"init": "teacher_layers", "layers": [0, 1, 2, 3], "adaptive": dict(ADAPTIVE)}
    tiny_recipe["losses"] = [{"name": "kd", "temperature": 1.0}, {"name": "hidden_mse", "layer_map": "uniform"}]
    tiny_recipe["training"].update(report_to=[])
    tiny_recipe["evaluation"] = {"latency_batch_sizes": [1], "latency_repeats": 1}
    return tiny_recipe


# --- configuration --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("adaptive, expected", [
    ({"widths": [0.5]}, r"recipe key 'student.adaptive.widths'.*must hold 1.0"),
    ({"depths": [1.0, 0.5, 0.5]}, r"recipe key 'student.adaptive.depths'.*repeats a multiplier"),
    ({"widths": [1.0, 0.0]}, r"recipe key 'student.adaptive.widths\[1\]': Input should be greater than 0"),
    ({"widht": [1.0]}, r"recipe key 'student.adaptive.widht' is unknown"),
])
def test_bad_adaptive_sections_are_one_line(dyna, adaptive, expected):
    dyna["student"]["adaptive"] = adaptive
    with pytest.raises(ConfigError, match="^" + expected):
        parse_recipe(dyna)


def test_adaptive_refuses_attention_losses_other_tasks_and_generations(dyna, tiny_recipe):
    with pytest.raises(ConfigError, match=r"^recipe key 'losses\[0\]': 'attention_kl' compares attention maps"):
        parse_recipe({**dyna, "losses": [{"name": "attention_kl"}]})
    with pytest.raises(ConfigError, match="^recipe keys 'student.adaptive' and 'generations' do not go together"):
        parse_recipe({**dyna, "teacher": None, "losses": [{"name": "ce"}], "generations": {},
                      "student": {"init": "pretrained", "model": dyna["teacher"]["model"], "adaptive": {}}})
    retrieval = {"task": "retrieval", "data": {"train_file": "pairs.jsonl"}, "teacher": dyna["teacher"],
                 "student": dyna["student"], "losses": [{"name": "tct"}]}
    with pytest.raises(ConfigError, match="^recipe key 'student.adaptive': the retrieval task has no width/depth"):
        parse_recipe(retrieval)


def test_sub_networks_full_first_and_sorted(dyna):
    dyna["student"]["adaptive"] = {"widths": [0.25, 1.0, 0.5], "depths": [0.5, 1.0]}
    cfg = parse_recipe(dyna).student.adaptive
    assert cfg.sub_networks()[0] == (1.0, 1.0)
    assert cfg.sub_networks() == [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (1.0, 0.5), (0.5, 0.5), (0.25, 0.5)]


def test_staged_dynabert_rewires_once(dyna):
    """DynaBERT's width stage then depth stage: each stage's own adaptive section; the later stage never rewires."""
    dyna["student"]["adaptive"] = {"widths": [1.0, 0.5]}
    dyna["stages"] = [{"name": "width"}, {"name": "depth", "adaptive": {"widths": [1.0, 0.5], "depths": [1.0, 0.5]}}]
    recipe = parse_recipe(dyna)
    width, depth = stage_recipes(recipe)
    assert width.student.adaptive.depths == [1.0] and width.student.adaptive.rewire is True
    assert depth.student.init == "pretrained" and depth.student.adaptive.depths == [1.0, 0.5]
    assert depth.student.adaptive.rewire is False


# --- the loss -------------------------------------------------------------------------------------------------------

def _batch(prep):
    split = tokenized(prep)["train"]
    return DataCollator(prep.tokenizer.pad_token_id)([split[i] for i in range(8)])


@pytest.mark.parametrize("n_layers, depth, ends", [
    (6, 0.5, [2, 4, 6]),  # DynaBERT's kept_layers_index[1:] for blocks 0, 2, 4
    (6, 0.75, [1, 2, 4, 5, 6]),  # block 3 (0-based) dropped: block 2's output stands for the end of blocks 2-3
    (12, 0.75, [1, 2, 4, 5, 6, 8, 9, 10, 12]),
    (4, 1.0, [1, 2, 3, 4]),
])
def test_a_kept_block_stands_for_the_span_it_replaces(n_layers, depth, ends):
    assert span_ends(kept_layers(n_layers, depth), n_layers) == ends


def test_the_total_is_the_sum_over_sub_networks_and_dropped_layers_are_skipped(dyna):
    prep = prepare(parse_recipe(dyna))
    prep.student.eval()  # no dropout: the same function in every call
    module = prep.module
    assert isinstance(module, AdaptiveDistillationModule)
    batch = _batch(prep)
    teacher = module.student_forward(batch)  # any fixed target will do: the student's own full-network states
    teacher.hidden_states = tuple(h.detach() + 0.1 for h in teacher.hidden_states)
    teacher.logits = teacher.logits.detach() * 2
    total, values, logits = module(batch, teacher)

    plain = DistillationModule(prep.student, list(module.terms))
    mse = module.terms[1].fn
    expected, hidden = 0.0, []
    for width, depth in module.sub_networks:
        with sub_network(prep.student, width, depth):
            reps = plain.student_forward(batch)
        # uniform map: pairs (1, 1) … (4, 4); at depth 0.5 blocks 1 and 3 (1-based) are kept and each stands for
        # itself and the dropped block after it (DynaBERT's pairing), so the sub-network's two block outputs pair
        # with the teacher's layers 2 and 4 (the last with the last) and the pairs of layers 1 and 3 are skipped
        pairs = ((1, 2), (2, 4)) if depth == 0.5 else [(i, i) for i in range(1, 5)]
        by_hand = torch.stack([mse(reps.hidden_states[j], teacher.hidden_states[t], mask=batch["attention_mask"])
                               for j, t in pairs]).mean()
        hidden.append(by_hand)
        kd = module.terms[0](reps, teacher, batch)
        expected = expected + module.terms[0].weight * kd + module.terms[1].weight * by_hand
    assert torch.allclose(total, expected, rtol=1e-5)
    assert torch.allclose(values["hidden_mse"], torch.stack(hidden).mean(), rtol=1e-5)
    assert torch.equal(logits, plain.student_forward(batch).logits)


# --- end to end -----------------------------------------------------------------------------------------------------

def test_rewiring_in_the_pipeline_keeps_the_teachers_function(dyna):
    prep = prepare(parse_recipe(dyna))
    from kdkit.tasks import get_task

    task = get_task("classification")
    batch = _batch(prep)
    before = prep.student.bert.encoder.layer[0].intermediate.dense.weight.clone()
    task.rewire_student(prep, tokenized(prep)["train"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        assert torch.allclose(prep.student(**inputs).logits, prep.teacher(**inputs).logits, atol=1e-6)
    assert not torch.equal(prep.student.bert.encoder.layer[0].intermediate.dense.weight, before)


def test_dynabert_end_to_end_grid_report_and_pick(dyna, tmp_path, capsys):
    out = tmp_path / "run"
    report = api.distill(dyna)
    grid = report["sub_networks"]
    assert [(e["width"], e["depth"]) for e in grid] == [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.5, 0.5)]
    assert grid[0]["metrics"] == report["student"]["metrics"] and grid[0]["dir"] == str(out / "student")
    assert [len(e["layers"]) for e in grid] == [4, 4, 2, 2] and [e["heads"] for e in grid] == [4, 2, 4, 2]
    assert all(e["params"] < grid[0]["params"] for e in grid[1:])
    assert all(0 <= e["validation"]["accuracy"] <= 1 for e in grid)
    for entry in grid[1:]:
        model = AutoModelForSequenceClassification.from_pretrained(entry["dir"], trust_remote_code=True)
        assert sum(p.numel() for p in model.parameters()) == entry["params"]
    md = (out / "report.md").read_text()
    assert "## Sub-networks (width × depth)" in md and "student, width 0.5 × depth 0.5" in md
    assert (out / "sub_networks.png").stat().st_size > 0

    # kdkit pick: the best validation score within the budget, the smaller on a tie
    fits = [e for e in grid if e["params"] <= grid[1]["params"]]
    best = max(fits, key=lambda e: (e["validation"]["accuracy"], -e["params"]))
    code, stdout, _ = run_cli(["pick", str(out), "--params", str(grid[1]["params"])], capsys)
    assert code == 0 and stdout.strip().splitlines()[-1] == best["dir"]
    code, _, err = run_cli(["pick", str(out), "--params", "10"], capsys)
    assert code == 2 and err.startswith("error: no sub-network fits the budget; the smallest has")
    code, _, err = run_cli(["pick", str(out)], capsys)
    assert code == 2 and "give a budget" in err
    code, _, err = run_cli(["pick", str(out), "--latency-ms", "5", "--batch-size", "32"], capsys)
    assert code == 2 and "measured latency at batch sizes 1" in err


def test_pick_refuses_a_run_without_sub_networks(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"student": {"params": 1}}))
    code, _, err = run_cli(["pick", str(tmp_path), "--params", "5"], capsys)
    assert code == 2 and "has no sub-networks" in err
    code, _, err = run_cli(["pick", str(Path(tmp_path) / "nowhere"), "--params", "5"], capsys)
    assert code == 2 and "no report.json here" in err


def test_staged_dynabert_reports_the_last_stages_grid(dyna, tmp_path):
    dyna["student"]["adaptive"] = {"widths": [1.0, 0.5], "importance_examples": 16}
    dyna["training"].update(max_steps=2)
    dyna["stages"] = [{"name": "width"}, {"name": "depth", "adaptive": {"widths": [1.0, 0.5], "depths": [1.0, 0.5]}}]
    report = api.distill(dyna)
    assert [(e["width"], e["depth"]) for e in report["sub_networks"]] == [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5),
                                                                          (0.5, 0.5)]
    md = (tmp_path / "run" / "report.md").read_text()
    assert md.index("## Stages") < md.index("## Sub-networks (width × depth)")
    assert (tmp_path / "run" / "sub_networks.png").stat().st_size > 0
    width_stage = json.loads((tmp_path / "run" / "stage-0" / "report.json").read_text())
    assert [(e["width"], e["depth"]) for e in width_stage["sub_networks"]] == [(1.0, 1.0), (0.5, 1.0)]


def test_an_interrupted_dynabert_run_resumes_to_the_same_weights(dyna, tmp_path):
    """Rewiring is redone on resume (same examples, same order) before the checkpoint's weights are loaded, so a run
    stopped after step 2 of 4 ends with the uninterrupted run's student exactly."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    api.distill(dyna)
    final = load_file(out / "student" / "model.safetensors")
    (out / "report.json").unlink()
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    api.distill(dyna, resume=True)
    resumed = load_file(out / "student" / "model.safetensors")
    assert final.keys() == resumed.keys() and all(final[k].equal(resumed[k]) for k in final)


def test_a_comparison_document_shows_the_grid_per_run_and_paired_differences(dyna, tmp_path):
    dyna["training"].update(max_steps=1)
    comparison = {"name": "dyna", "output_dir": str(tmp_path / "cmp"), "seeds": [0], "baseline": "kd",
                  "runs": [{"name": "kd", "recipe": dyna},
                           {"name": "mse only", "recipe": dyna, "set": ["losses=[{name: hidden_mse}]"]}]}
    page = api.compare_document([comparison], tmp_path / "doc" / "results.md").read_text()
    assert "![dyna: DynaBERT sub-networks, mean over seeds; each run's difference from the first]" in page
    table = page[page.index("DynaBERT sub-networks: each run's accuracy over seeds, and each run's difference from "
                            "the first paired by seed:"):].splitlines()
    assert table[2] == ("| width | depth | params M | kd (mean ± std) | mse only (mean ± std) | mse only − kd "
                        "(± s.e., seeds) |")
    assert [row.split(" | ")[:2] for row in table[4:8]] == [["| 1", "1"], ["| 1", "0.5"], ["| 0.5", "1"],
                                                              ["| 0.5", "0.5"]]
    assert all(row.endswith("(1) |") for row in table[4:8])
    assert "\n".join(table[2:8]) in (tmp_path / "cmp" / "leaderboard.md").read_text()
