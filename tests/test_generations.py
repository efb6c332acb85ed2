"""Born-again self-distillation over generations, and recipes without a teacher (SPEC §5)."""

from __future__ import annotations

import json
import shutil

import pytest

from kdkit import api
from kdkit.config import parse_recipe
from kdkit.errors import ConfigError
from kdkit.engine.generations import generation_recipes
from kdkit.report import generations as generations_report
from kdkit.report.leaderboard import leaderboard, render_markdown as render_leaderboard
from kdkit.report.report import render_markdown, write_report
from tiny import prepare


@pytest.fixture
def solo_recipe(tiny_recipe):
    """The tiny recipe without a teacher: the tiny BERT is the pretrained student, trained with CE alone."""
    teacher = tiny_recipe.pop("teacher")
    tiny_recipe["student"] = {"init": "pretrained", "model": teacher["model"]}
    tiny_recipe["losses"] = [{"name": "ce"}]
    tiny_recipe["training"].update(max_steps=2, save_steps=2, report_to=[])
    tiny_recipe["evaluation"] = {"latency_batch_sizes": [1], "latency_repeats": 1}
    return tiny_recipe


# --- configuration --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, expected", [
    ({"generations": {"count": 1}}, "recipe key 'generations.count': Input should be greater than or equal to 2"),
    ({"generations": {"alpha": 1.5}}, "recipe key 'generations.alpha'"),
    ({"generations": {"temperature": 0}}, "recipe key 'generations.temperature'"),
    ({"generations": {"rounds": 3}}, "recipe key 'generations.rounds' is unknown; valid keys: count, alpha, temp"),
    ({"losses": [{"name": "kd"}]}, "recipe key 'teacher' is missing but losses[0] 'kd' reads the teacher"),
    ({"student": {"init": "teacher_layers", "layers": [0]}},
     "recipe key 'teacher' is missing but student.init 'teacher_layers' builds the student from the teacher"),
    ({"student": {"init": "config", "overrides": {"num_hidden_layers": 1}}},
     "recipe key 'teacher' is missing but student.init 'config' builds the student from the teacher"),
    ({"teacher": {"model": "t"}, "student": {"init": "teacher_layers", "layers": [0]}, "generations": {}},
     "recipe key 'generations': every generation has another teacher"),
])
def test_bad_generations_or_missing_teacher_is_one_line(solo_recipe, change, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("[", r"\[").replace("(", r"\(")):
        parse_recipe({**solo_recipe, **change})


def test_teacher_may_be_absent_or_null_when_nothing_needs_it(solo_recipe):
    for losses in ([{"name": "ce"}], [{"name": "label_smoothing"}], [{"name": "confidence_penalty"}],
                   [{"name": "ce", "weight": 0.4}, {"name": "beta_smoothing"}]):
        assert parse_recipe({**solo_recipe, "losses": losses}).teacher is None
    assert parse_recipe({**solo_recipe, "teacher": None}).teacher is None
    config_student = {"init": "config", "model": solo_recipe["student"]["model"], "overrides": {"num_hidden_layers": 1}}
    assert parse_recipe({**solo_recipe, "student": config_student}).teacher is None


def test_generation_recipes_chain_the_teachers_and_use_the_born_again_loss(solo_recipe, tmp_path):
    recipe = parse_recipe({**solo_recipe, "generations": {"count": 3, "alpha": 0.3, "temperature": 5.0}})
    gens = generation_recipes(recipe)
    assert [g.resolved_output_dir() for g in gens] == [tmp_path / "run" / f"gen-{g}" for g in range(3)]
    assert gens[0].teacher is None and gens[0].losses == recipe.losses and gens[0].generations is None
    for g in (1, 2):
        assert gens[g].teacher.model == str(tmp_path / "run" / f"gen-{g - 1}" / "student")
        assert gens[g].teacher.cache == "auto" and gens[g].teacher.finetune is None
        assert gens[g].student == recipe.student and gens[g].training == recipe.training
        ce, soft = gens[g].losses
        assert (ce.name, ce.weight) == ("ce", pytest.approx(0.7))
        assert (soft.name, soft.weight, soft.temperature) == ("soft_ce", 0.3, 5.0)
        assert soft.temperature_on == "teacher" and soft.t2_scaling is False  # the student at T = 1, no T² factor


# --- end to end -----------------------------------------------------------------------------------------------------

def test_generations_end_to_end_reuse_resume_and_report(solo_recipe, tmp_path, capsys):
    solo_recipe["generations"] = {"count": 2}
    out = tmp_path / "run"
    report = api.distill(solo_recipe)

    assert [row["status"] for row in report["generations"]] == ["trained"] * 2
    first, second = (json.loads((out / f"gen-{g}" / "report.json").read_text()) for g in range(2))
    assert "teacher" not in first and first["teacher_source"] is None  # generation 0: plain CE, no teacher
    # generation 1's teacher is generation 0's exported student
    assert second["teacher_source"] == str(out / "gen-0" / "student")
    assert second["teacher"]["params"] == second["student"]["params"]
    assert second["teacher"]["metrics"]["accuracy"] == first["student"]["metrics"]["accuracy"]
    assert "caching teacher signals" in capsys.readouterr().out  # teacher.cache auto, keyed by gen 0's weights
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    rows = saved["generations"]
    assert [r["generation"] for r in rows] == [0, 1] and rows[0]["gain"] == 0.0
    assert rows[1]["gain"] == pytest.approx(rows[1]["metrics"]["accuracy"] - rows[0]["metrics"]["accuracy"])
    assert all(0.0 <= r["metrics"]["ece"] <= 1.0 for r in rows) and "teacher" not in saved
    assert saved["student"]["metrics"]["accuracy"] == rows[1]["metrics"]["accuracy"]
    assert saved["student_dir"] == str(out / "gen-1" / "student")
    table = (out / "report.md").read_text()
    assert "gain over gen 0" in table and "| 1 | generation 0 |" in table

    # a second call trains nothing: every generation is reused
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = api.distill(solo_recipe)
    assert [row["status"] for row in again["generations"]] == ["reused"] * 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps

    # an interrupted last generation resumes from its checkpoint; the earlier one is reused
    (out / "gen-1" / "report.json").unlink()
    assert [r["status"] for r in api.distill(solo_recipe)["generations"]] == ["reused", "resumed"]

    # another α changes generation 1 only: refused (a finished run is never silently replaced) unless overwrite,
    # which redoes generation 1 and still reuses generation 0
    other = {**solo_recipe, "generations": {"count": 2, "alpha": 0.5}}
    with pytest.raises(ConfigError, match=r"^generations: '.*gen-1' was made by a different recipe \(losses"):
        api.distill(other)
    assert [r["status"] for r in api.distill(other, overwrite=True)["generations"]] == ["reused", "trained"]

    # a generation trained again makes every later one train again: its teacher changed
    shutil.rmtree(out / "gen-0")
    assert [r["status"] for r in api.distill(other)["generations"]] == ["trained", "trained"]


def test_compare_gives_a_born_again_run_one_row_per_generation(solo_recipe, tmp_path):
    born = {**solo_recipe, "generations": {"count": 2}}
    board = api.compare({"name": "sd", "output_dir": str(tmp_path / "cmp"), "seeds": [0, 1], "baseline": "ban",
                         "runs": [{"name": "ban", "recipe": born},
                                  {"name": "ls", "recipe": solo_recipe, "set": ["losses=[{name: label_smoothing}]"]}]})
    rows = {row["run"]: row for row in board["rows"]}
    assert set(rows) == {"ban gen 0", "ban gen 1", "ls"}  # no teacher row: each generation's teacher is a row
    for g in (0, 1):
        reports = [json.loads((tmp_path / "cmp" / "ban" / f"seed-{s}" / f"gen-{g}" / "report.json").read_text())
                   for s in (0, 1)]
        assert rows[f"ban gen {g}"]["scores"] == pytest.approx([r["student"]["metrics"]["accuracy"] for r in reports])
        assert rows[f"ban gen {g}"]["n"] == 2 and rows[f"ban gen {g}"]["teacher_score"] is None
    assert board["baseline"] == "ban gen 0" and rows["ban gen 0"]["delta"] == 0
    gen0, gen1 = rows["ban gen 0"], rows["ban gen 1"]
    assert gen1["delta"] == pytest.approx(gen1["score_mean"] - gen0["score_mean"])


# --- without a teacher ----------------------------------------------------------------------------------------------

def test_teacher_free_run_loads_no_teacher_and_reports_the_student_alone(solo_recipe, tmp_path, capsys):
    solo_recipe["losses"] = [{"name": "label_smoothing", "epsilon": 0.1}]
    prep = prepare(parse_recipe(solo_recipe))
    assert prep.teacher is None and prep.teacher_tokenizer is prep.tokenizer
    report = api.distill(solo_recipe)
    assert "teacher" not in report and report["teacher_source"] is None
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "comparison" not in saved and "teacher" not in saved
    table = (tmp_path / "run" / "report.md").read_text()
    assert "| student:" in table and "| teacher:" not in table and "DM" not in table and "ece (%) ↓" in table
    with pytest.raises(ConfigError, match="no teacher, so there is no teacher cache"):
        api.cache(solo_recipe)


def test_random_init_student_without_a_teacher_takes_its_models_tokenizer(solo_recipe):
    solo_recipe["student"] = {"init": "config", "model": solo_recipe["student"]["model"],
                              "overrides": {"num_hidden_layers": 1}}
    prep = prepare(parse_recipe(solo_recipe))
    assert prep.teacher is None and prep.student.config.num_hidden_layers == 1
    assert prep.tokenizer.get_vocab()["good"] == 5


def _entry(accuracy, params=10, latency=0.01):
    """An entry as runs of earlier kdkit versions wrote it (top-level accuracy/ECE): reports still read it."""
    return {"name": "m", "params": params, "accuracy": accuracy, "ece": 0.05, "n": 8,
            "latency": {"1": {"median_s": latency, "p90_s": latency}}}


def test_report_and_leaderboard_without_a_teacher_by_hand(tmp_path):
    results = {"split": "test", "dm_alpha": 0.5, "student": _entry(0.75)}
    table = render_markdown(results)
    assert table.splitlines()[0] == "| model | params (M) | accuracy (%) | ece (%) ↓ | latency b1 (ms) |"
    assert "| student: m | 0.00 | 75.00 | 5.00 | 10.00 |" in table
    write_report(tmp_path, results)
    assert "comparison" not in json.loads((tmp_path / "report.json").read_text())

    paired = {"teacher": _entry(0.9, params=100, latency=0.04), "student": _entry(0.8), "teacher_source": "t"}
    board = leaderboard({"kd": [{"seed": 0, "status": "trained", "dir": "", "report": paired}],
                         "smooth": [{"seed": 0, "status": "trained", "dir": "", "report": results}]})
    teacher, kd, smooth = board["rows"]
    assert teacher["role"] == "teacher" and (kd["run"], smooth["run"]) == ("kd", "smooth")
    assert smooth["teacher_score"] is None and smooth["dm"] is None and smooth["speedup"] == {}
    assert smooth["teacher"] == "" and kd["speedup"]["1"] == pytest.approx(4.0)
    lines = render_leaderboard(board).splitlines()
    header = lines[2].split(" | ")
    line = next(row for row in lines if row.startswith("| smooth")).split(" | ")
    assert line[header.index("teacher accuracy (%)")] == "—" and line[header.index("speedup b1")] == "—"


def test_generations_table_by_hand():
    rows = [{"generation": g, "status": "trained", "dir": "", "teacher_source": None if g == 0 else f"gen-{g - 1}",
             "params": 2_000_000, "accuracy": a, "ece": 0.1, "gain": a - 0.5} for g, a in enumerate([0.5, 0.55])]
    table = generations_report.render_markdown({"generations": rows, "alpha": 0.4, "temperature": 4.0})
    assert "| 0 | — | 2.00 | 50.00 | 10.00 | +0.00 | trained |" in table
    assert "| 1 | generation 0 | 2.00 | 55.00 | 10.00 | +5.00 | trained |" in table
    assert "α = 0.4" in table and "T = 4" in table
