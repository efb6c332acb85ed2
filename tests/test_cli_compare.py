"""``kdkit compare`` on the command line: recipes or a comparison file, ``--seeds 0 1`` parsing, one-line errors."""

from __future__ import annotations

import json

import yaml

from tiny import run_cli, write_recipe


def test_compare_recipes_with_seeds_then_comparison_file_reuses_them(tiny_recipe, tmp_path, capsys):
    tiny_recipe["training"].update(max_steps=2, save_steps=2, report_to=[])
    tiny_recipe["evaluation"]["latency_repeats"] = 1
    first = write_recipe(tmp_path / "kd.yaml", tiny_recipe)
    second = write_recipe(tmp_path / "ce.yaml", {**tiny_recipe, "losses": [{"name": "ce"}]})
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", str(first), str(second), "--seeds", "0", "1", "--output-dir", str(out),
                                 "--alpha", "0.5"], capsys)
    assert code == 0, err
    assert "| run |" in stdout and "pareto.png" in stdout
    board = json.loads((out / "leaderboard.json").read_text())
    assert sorted(r["run"] for r in board["rows"] if r["role"] == "student") == ["ce", "kd"]
    assert all(r["seeds"] == [0, 1] for r in board["rows"] if r["role"] == "student")
    assert (out / "pareto.png").stat().st_size > 0 and (out / "leaderboard.html").is_file()

    # the same runs described by a comparison file (recipe paths relative to it) are all reused
    spec = tmp_path / "comparison.yaml"
    runs = [{"name": "kd", "recipe": "kd.yaml"}, {"name": "ce", "recipe": "ce.yaml"}]
    spec.write_text(yaml.safe_dump({"name": "again", "output_dir": str(out), "seeds": [0, 1], "runs": runs}))
    code, stdout, err = run_cli(["compare", str(spec)], capsys)
    assert code == 0, err
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["name"] == "again"
    assert {s for r in board["rows"] if r["role"] == "student" for s in r["status"].values()} == {"reused"}

    # with --document, --seeds replaces the file's seeds too: seed 0 alone is reused, seed 2 is never trained
    spec.write_text(yaml.safe_dump({"name": "again", "output_dir": str(out), "seeds": [0, 1, 2], "runs": runs}))
    code, stdout, err = run_cli(["compare", str(spec), "--seeds", "0", "--document", str(tmp_path / "doc.md")], capsys)
    assert code == 0, err
    board = json.loads((out / "leaderboard.json").read_text())
    assert all(r["seeds"] == [0] for r in board["rows"] if r["role"] == "student")
    assert not (out / "kd" / "seed-2").exists()

    # --finished-only: the document of seeds 0 and 1, seed 2 named as not finished and still not trained; a
    # comparison with no finished run is named, without a table
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(yaml.safe_dump({"name": "not started", "output_dir": str(tmp_path / "fresh"), "runs": runs}))
    code, stdout, err = run_cli(["compare", str(spec), str(fresh), "--finished-only", "--document",
                                 str(tmp_path / "doc.md")], capsys)
    assert code == 0, err
    document = (tmp_path / "doc.md").read_text()
    assert "Not finished yet, so not in these tables: kd seed 2, ce seed 2." in document
    assert "No run finished yet, so no table here: not started." in document and "## not started" not in document
    assert not (out / "kd" / "seed-2").exists() and not (tmp_path / "fresh").exists()
    code, _, err = run_cli(["compare", str(fresh), str(fresh), "--finished-only", "--document",
                            str(tmp_path / "none.md")], capsys)
    assert code == 2 and "no run of any of the 2 comparisons has finished yet" in err
    assert not (tmp_path / "none.md").exists()


def test_compare_errors_are_one_line_exit_2(tiny_recipe, tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    code, _, err = run_cli(["compare", str(path), "--seeds", "zero"], capsys)
    assert code == 2 and "seeds are integers" in err and "Traceback" not in err
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump({"runs": [{"name": "a", "recipe": "r.yaml"}], "seeds": [0, 0]}))
    code, _, err = run_cli(["compare", str(spec)], capsys)
    assert code == 2 and err.startswith("error: ") and "repeats a seed" in err
    code, _, err = run_cli(["compare", str(spec), str(path)], capsys)
    assert code == 2 and "give it alone" in err
    code, _, err = run_cli(["compare", str(path), "--finished-only", "--overwrite"], capsys)
    assert code == 2 and "--overwrite has nothing to redo" in err and "Traceback" not in err
