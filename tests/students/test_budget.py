import json

import pytest
from transformers import AutoModelForSequenceClassification

from kdkit.errors import ConfigError
from kdkit.students.budget import evenly_spaced, parse_budget, plan_student
from tiny import run_cli, write_recipe


@pytest.mark.parametrize("params, size, expected", [
    ("15%", None, 150), ("1000", None, 1000), ("2.5%", None, 25), (None, "20MB", 5_000_000),
    (None, "1KiB", 256), (None, "400", 100)])
def test_budgets(params, size, expected):
    assert parse_budget(params, size, 1000) == expected


@pytest.mark.parametrize("params, size, flag", [
    (None, None, "one of"), ("15%", "20MB", "one of"), ("0", None, "--params"), ("150%", None, "--params"),
    ("ten", None, "--params"), (None, "20XB", "--bytes"), (None, "-1MB", "--bytes")])
def test_bad_budgets_name_the_flag(params, size, flag):
    with pytest.raises(ConfigError, match=flag):
        parse_budget(params, size, 1000)


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert evenly_spaced(4, 2) == [0, 3] and evenly_spaced(4, 1) == [0] and evenly_spaced(4, 4) == [0, 1, 2, 3]


def test_plan_is_the_deepest_student_that_fits(tiny_teacher):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
    total = sum(p.numel() for p in teacher.parameters())
    block = sum(p.numel() for p in teacher.bert.encoder.layer[0].parameters())
    embedding = teacher.get_input_embeddings().weight.numel()
    assert plan_student(teacher, total).layers == [0, 1, 2, 3] and plan_student(teacher, total).embedding_fraction \
        is None
    # one block less and half the embedding's parameters: 3 blocks, fraction 0.5
    plan = plan_student(teacher, total - block - embedding // 2)
    assert plan.layers == [0, 2, 3] and plan.embedding_fraction == pytest.approx(0.5, abs=1 / embedding)
    assert plan.parameters <= plan.budget
    # too little room for 5% of the embedding at 3 blocks: drops to 2 blocks
    plan = plan_student(teacher, total - block - embedding + int(0.04 * embedding))
    room = block + int(0.04 * embedding)  # what 2 blocks leave for the embedding
    assert len(plan.layers) == 2
    assert plan.embedding_fraction == (None if room >= embedding else pytest.approx(room / embedding))
    with pytest.raises(ConfigError, match="below the smallest student"):
        plan_student(teacher, 10)


def test_kdkit_compress_meets_the_budget_and_reports_it(tiny_recipe, tmp_path, capsys):
    from tiny import FILLER, NEGATIVE, POSITIVE, SPECIAL, make_tiny_teacher

    # a vocabulary of 3,000 more words: the embedding outweighs the blocks, as in real small students
    vocab = SPECIAL + POSITIVE + NEGATIVE + FILLER + [f"rare{i}" for i in range(3000)]
    tiny_recipe["teacher"]["model"] = str(make_tiny_teacher(tmp_path / "teacher", vocab=vocab))
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    code, out, err = run_cli(["compress", str(path), "--params", "40%"], capsys)
    assert code == 0, err
    landed = json.loads((tmp_path / "run" / "compress.json").read_text())
    assert landed["within_budget"] and landed["student_parameters"] <= landed["budget"]
    assert landed["embedding_fraction"] is not None and 0.05 <= landed["embedding_fraction"] < 1
    assert "compress: budget" in out
    config = json.loads((tmp_path / "run" / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == len(landed["layers"]) and "block_embedding" in config
    code, _, err = run_cli(["compress", str(path), "--params", "0.0001%", "--overwrite"], capsys)
    assert code == 2 and "below the smallest student" in err
