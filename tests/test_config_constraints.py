"""Constraints of the typed config and the hardened recipe loader (issue 12, deliverables 1 and 2).

Every field is bounded (finite, ranges, booleans apart from numbers), checked once at the edge; model-dependent
checks (``data.max_length`` against positions, student overrides against the architecture) run as soon as the
models' configs are read, before anything is written; the YAML loader refuses duplicate keys, aliases that expand
beyond a small limit (an alias bomb), deep nesting and files over 1 MiB; no error message echoes an unbounded value.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tracemalloc
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig, RobertaForSequenceClassification

import kdkit
from kdkit import config, terms
from kdkit.config import (MAX_RECIPE_BYTES, GenerationsConfig, apply_overrides, load_yaml, parse_recipe,
                          read_recipe_file)
from kdkit.engine.pipeline import position_limit
from kdkit.errors import ConfigError
from kdkit.report.leaderboard import parse_comparison
from kdkit.schema import SEED_MAX, shorten
from kdkit.students.bilstm import student_bilstm
from kdkit.students.config import student_from_config
from tiny import make_tiny_teacher, run_cli, with_key, write_recipe

BASE = {
    "data": {"dataset": "rotten_tomatoes"},
    "teacher": {"model": "minilm-l6", "finetune": {"epochs": 1}},
    "student": {"init": "teacher_layers", "layers": [0, 2, 4]},
    "losses": [{"name": "ce"}, {"name": "kd"}],
}
TEN_MB = 10 * 1024 * 1024


def _refused(overrides: list[str], data: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_recipe(apply_overrides(copy.deepcopy(data or BASE), overrides))
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message[:400]
    return message


# --- 1. constraints: a table of values that validate in plain pydantic but cannot work ----------------------------

@pytest.mark.parametrize("key, value, named", [
    ("training.learning_rate", ".nan", "'training.learning_rate'"),
    ("training.learning_rate", "nan", "'training.learning_rate'"),  # the string "nan", which float() reads
    ("training.learning_rate", "1e-30", "'training.learning_rate'"),  # denormal-small
    ("training.learning_rate", "11", "'training.learning_rate'"),
    ("training.epochs", "1e400", "'training.epochs'"),  # YAML's 1e400 is inf
    ("training.epochs", "-.inf", "'training.epochs'"),
    ("training.epochs", "1e5", "'training.epochs'"),
    ("training.seed", "-1", "'training.seed'"),
    ("training.seed", str(2**32), "'training.seed'"),
    ("data.seed", "-1", "'data.seed'"),
    ("data.seed", str(2**32), "'data.seed'"),
    ("teacher.finetune.seed", "-5", "'teacher.finetune.seed'"),
    ("training.batch_size", "true", "'training.batch_size'"),  # lax pydantic reads it as 1
    ("training.batch_size", "1e20", "'training.batch_size'"),
    ("training.batch_size", "32.5", "'training.batch_size'"),  # never truncated to 32
    ("training.eval_batch_size", str(2**16 + 1), "'training.eval_batch_size'"),
    ("training.gradient_accumulation_steps", "false", "'training.gradient_accumulation_steps'"),
    ("training.max_steps", "1e400", "'training.max_steps'"),
    ("training.max_steps", str(2**31), "'training.max_steps'"),
    ("training.max_steps", "0", "'training.max_steps': 0 steps would train nothing"),
    ("training.logging_steps", "0", "'training.logging_steps'"),
    ("training.weight_decay", ".inf", "'training.weight_decay'"),
    ("training.warmup_ratio", ".nan", "'training.warmup_ratio'"),
    ("training.extra", "{max_grad_norm: .nan}", "'training.extra.max_grad_norm'"),
    ("training.extra", "{max_grad_norm: 1e400}", "'training.extra.max_grad_norm'"),
    ("losses.1.temperature", "1e-30", "'losses[1].temperature'"),
    ("losses.1.temperature", "1e400", "'losses[1].temperature'"),
    ("losses.1.temperature", "true", "'losses[1].temperature'"),
    ("losses.0.weight", ".inf", "'losses[0].weight'"),
    ("losses.0.weight", "1e7", "'losses[0].weight'"),
    ("losses.1.t2_scaling", "1", "'losses[1].t2_scaling'"),  # lax pydantic reads it as true
    ("losses.1.t2_scaling", "'yes'", "'losses[1].t2_scaling'"),
    ("losses.1", "{name: rwkd, meta_lr: .inf}", "'losses[1].meta_lr'"),
    ("losses.1", "{name: hidden_mse, layer_map: pairs, pairs: [[1, true]]}", "'losses[1].pairs[0][1]'"),
    ("losses.1", "{name: beta_smoothing, ema_decay: .nan}", "'losses[1].ema_decay'"),
    ("evaluation.latency_batch_sizes", "[1, true]", "'evaluation.latency_batch_sizes[1]'"),
    ("evaluation.dm_alpha", ".nan", "'evaluation.dm_alpha'"),
    ("student.layers", "[0, true]", "'student.layers[1]'"),
    ("student.layers", "[0, 100000]", "'student.layers[1]'"),
    ("student.overrides", "{hidden_dropout_prob: .nan}", "'student.overrides.hidden_dropout_prob'"),
    ("teacher.cache_top_k", "0", "'teacher.cache_top_k'"),
    ("data.max_length", "true", "'data.max_length'"),
    ("data.max_train_samples", "1e400", "'data.max_train_samples'"),
    ("name", "'" + "n" * 300 + "'", "'name'"),
])
def test_a_value_that_cannot_work_is_refused_naming_its_key(key, value, named):
    message = _refused([f"{key}={value}"])
    assert message.startswith(f"recipe key {named}"), message


def test_generations_temperature_is_bounded():
    data = {**BASE, "student": {"init": "pretrained", "model": "x"}, "generations": {"temperature": 1e-9}}
    assert "'generations.temperature'" in _refused([], data)


def test_values_inside_bounds_are_read_as_written():
    recipe = parse_recipe(apply_overrides(BASE, [
        "training.batch_size=32.0", "training.seed=4294967295", "data.seed=0", "losses.1.t2_scaling=false",
        "training.learning_rate=1e-4", "training.extra={adam_epsilon: 1e-8}", "losses.1.temperature=0.001"]))
    assert recipe.training.batch_size == 32 and isinstance(recipe.training.batch_size, int)
    assert recipe.training.seed == SEED_MAX and recipe.losses[1].t2_scaling is False
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; the recipe loader reads it as the number it is
    assert recipe.training.learning_rate == 1e-4
    assert recipe.training.extra == {"adam_epsilon": 1e-8}
    assert recipe.losses[1].temperature == 0.001


def _sections():
    """Every typed section a recipe holds, each with a valid payload: the structural guarantee below covers fields
    added later without a new list."""
    recipe = parse_recipe({**BASE, "generations": None})
    yield type(recipe.training), recipe.training.model_dump()
    yield type(recipe.evaluation), recipe.evaluation.model_dump()
    yield type(recipe.teacher), recipe.teacher.model_dump(exclude={"finetune"})
    yield type(recipe.data), recipe.data.model_dump()
    yield GenerationsConfig, {}
    for name, cls in terms.CONFIGS.items():
        yield cls, {"name": name}


def _scalar(annotation):
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation if annotation in (bool, int, float) else None


def test_every_number_and_boolean_field_of_every_section_is_strict():
    """NaN and inf for every float, a boolean for every int, a number for every boolean: each refused, under the
    field's own name."""
    checked = 0
    for cls, payload in _sections():
        for field_name, field in cls.model_fields.items():
            kind = _scalar(field.annotation)
            bad = {float: [float("nan"), float("inf"), True], int: [True, float("inf")], bool: [1, "yes"]}.get(kind, [])
            for value in bad:
                with pytest.raises(ValidationError) as info:
                    cls.model_validate({**payload, field_name: value})
                assert info.value.errors()[0]["loc"][0] == field_name, (cls.__name__, field_name, value)
                checked += 1
    assert checked > 100


# --- messages never render an unbounded value ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    {**BASE, "training": {"batch_size": "x" * TEN_MB}},
    {**BASE, "x" * TEN_MB: 1},
    {**BASE, "training": {"extra": {"x" * TEN_MB: 1}}},
    {**BASE, "losses": [{"name": "x" * TEN_MB}]},
    {**BASE, "task": "x" * TEN_MB},
    {**BASE, "evaluation": {"latency_batch_sizes": list(range(10**5))}},
])
def test_a_10_mb_value_or_key_is_cut_in_the_message(data):
    with pytest.raises(ConfigError) as info:
        parse_recipe(data)
    assert len(str(info.value)) < 400
    assert "x" * 100 not in str(info.value)


@pytest.mark.parametrize("item", ["k" * TEN_MB, "training.epochs=[" + "1," * TEN_MB, "x" * TEN_MB + "=1",
                                  "losses.9" + "9" * TEN_MB + ".weight=1", "training.epochs=" + "9" * 5000])
def test_a_10_mb_set_item_is_cut_in_the_message(item):
    with pytest.raises(ConfigError) as info:
        parse_recipe(apply_overrides(BASE, [item]))
    assert len(str(info.value)) < 400


PACKAGE = os.path.dirname(kdkit.__file__) + os.sep


def _python_bomb():
    bomb = ["lol"] * 9
    for _ in range(8):
        bomb = [bomb] * 9  # 9**9 strings once expanded, 9 distinct lists
    return bomb


@pytest.mark.parametrize("training", [{"extra": {"deepspeed": [_python_bomb(), float("nan")]}},
                                      {"report_to": _python_bomb()}, {"batch_size": _python_bomb()}])
def test_nested_shared_lists_are_neither_walked_nor_shown_expanded(training):
    """Walked in kdkit's Python, the 9**9 leaves would be hundreds of millions of executed lines, and shown
    expanded a string of gigabytes: count the lines run in kdkit's own frames and the peak memory instead of
    timing the parse (a C-level walk would not finish at all)."""
    lines = 0

    def count_lines(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return count_lines

    def trace(frame, event, arg):  # trace kdkit's frames line by line, the rest (pydantic, yaml) not at all
        return count_lines if frame.f_code.co_filename.startswith(PACKAGE) else None

    tracemalloc.start()
    sys.settrace(trace)
    try:
        with pytest.raises(ConfigError) as info:
            parse_recipe({**BASE, "training": training})
    finally:
        sys.settrace(None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert len(str(info.value)) < 300
    assert lines < 100_000, lines
    assert peak < 20 * 2**20, peak


def test_shorten_cuts_with_an_ellipsis():
    assert shorten("abc") == "abc"
    assert shorten("x" * 100) == "x" * 59 + "…"
    assert len(shorten(list(range(10**6)))) <= 60
    assert shorten(10**5000) == "<a int too large to show>"


# --- 2. the hardened loader ---------------------------------------------------------------------------------------

def _file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "recipe.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    path = _file(tmp_path, "name: a\ntraining:\n  epochs: 1\n  batch_size: 8\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"gives key 'epochs' twice \(lines 3 and 5\)"):
        read_recipe_file(path)
    with pytest.raises(ConfigError, match=r"key 'a' twice \(lines 1 and 1\)"):
        load_yaml("{a: 1, a: 2}", "x")


def test_duplicate_keys_in_a_comparison_file_are_refused(tmp_path):
    path = _file(tmp_path, "runs: []\nseeds: [0]\nruns: []\n")
    with pytest.raises(ConfigError, match=r"'runs' twice \(lines 1 and 3\)"):
        read_recipe_file(path)


BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
        + "name: *i\n")  # 9**9 "lol"s once expanded, e.g. by repr() in an error message


def test_an_alias_bomb_fails_fast_without_expanding(tmp_path):
    path = _file(tmp_path, BOMB)
    tracemalloc.start()  # expanded, the bomb would be 9**9 values: its small peak memory shows it was not
    try:
        with pytest.raises(ConfigError) as info:
            read_recipe_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    assert str(info.value) == (f"recipe file '{path}' expands its YAML aliases to more than 10000 values (alias *d, "
                               f"line 5); write the values out")


def test_aliases_within_the_limit_are_independent_copies():
    """``yaml.safe_dump`` writes an anchor and an alias for a value used twice (two runs of one inline recipe); each
    alias is read as its own copy, so changing one place never changes the other."""
    data = load_yaml(yaml.safe_dump({"a": (shared := {"epochs": [1, 2]}), "b": shared}), "x")
    assert data == {"a": {"epochs": [1, 2]}, "b": {"epochs": [1, 2]}}
    data["a"]["epochs"].append(3)
    assert data["b"]["epochs"] == [1, 2]
    merged = load_yaml("base: &b {epochs: 1, lr: 2}\nrun: {<<: *b, lr: 3}\n", "x")
    assert merged["run"] == {"epochs": 1, "lr": 3}


@pytest.mark.parametrize("text, expected", [
    ("a: &a [1, *a]\n", "uses the YAML alias *a inside its own anchor (line 1)"),
    ("a: 1\nb: *x\n", "found undefined alias 'x'"),
    ("a: &x " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*x" + "]" * 20 + "\n", "nested more than 32 levels"),
])
def test_aliases_that_cannot_be_expanded_are_refused(text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_yaml(text, "recipe file 'r.yaml'")


def test_set_values_go_through_the_same_loader():
    with pytest.raises(ConfigError, match=r"--set 'training.extra=&a \[\*a\]': the value uses the YAML alias \*a"):
        apply_overrides(BASE, ["training.extra=&a [*a]"])
    with pytest.raises(ConfigError, match="twice"):
        apply_overrides(BASE, ["training={epochs: 1, epochs: 2}"])
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        apply_overrides(BASE, ["training.extra=" + "[" * 1000 + "]" * 1000])
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        apply_overrides(BASE, [".".join(["a"] * 1000) + "=1"])


def test_a_recipe_over_1_mib_is_refused_before_parsing(tmp_path, monkeypatch):
    path = _file(tmp_path, b"name: x\n" + b"#" * MAX_RECIPE_BYTES)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the YAML loader was started on a file over the limit")

    monkeypatch.setattr(config, "RecipeLoader", no_parsing)
    with pytest.raises(ConfigError, match=r"is larger than 1048576 bytes \(1 MiB\)"):
        read_recipe_file(path)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    path = _file(tmp_path, "a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"nested more than 32 levels deep at key 'a\.0\.0\.0.*' \(line 1\)"):
        read_recipe_file(path)
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        nested: dict = {}
        node = nested
        for _ in range(2000):
            node["a"] = {}
            node = node["a"]
        parse_recipe({**BASE, "training": {"extra": {"deepspeed": nested}}})


def test_comparison_seeds_and_alpha_are_bounded():
    for data, named in [({"runs": [{"name": "a", "recipe": "x"}], "seeds": [-1]}, "seeds.0"),
                        ({"runs": [{"name": "a", "recipe": "x"}], "seeds": [2**32]}, "seeds.0"),
                        ({"runs": [{"name": "a", "recipe": "x"}], "seeds": [True]}, "seeds.0"),
                        ({"runs": [{"name": "a", "recipe": "x"}], "alpha": float("nan")}, "alpha")]:
        with pytest.raises(ConfigError, match=f"comparison key '{named}'"):
            parse_comparison(data)


# --- model-dependent checks, before anything is written -----------------------------------------------------------

def test_position_limit_subtracts_what_the_model_reserves():
    bert = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
        max_position_embeddings=64))
    roberta = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
        max_position_embeddings=66, pad_token_id=1))
    assert position_limit(bert) == 64
    assert position_limit(roberta) == 64  # positions start at padding_idx + 1 = 2


SMALL_BERT = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=8, max_position_embeddings=64)


@pytest.mark.parametrize("overrides, named", [
    ({"num_attention_heads": 0}, "student.overrides.num_attention_heads: 0"),
    ({"hidden_size": -8}, "student.overrides.hidden_size: -8"),
    ({"num_hidden_layers": 0}, "student.overrides.num_hidden_layers: 0"),
    ({"num_hidden_layers": -2}, "student.overrides.num_hidden_layers: -2"),
    ({"num_hidden_layers": True}, "student.overrides.num_hidden_layers: True"),
    ({"num_hidden_layers": 2.5}, "student.overrides.num_hidden_layers: 2.5"),
    ({"intermediate_size": 0}, "student.overrides.intermediate_size: 0"),
    ({"max_position_embeddings": 0}, "student.overrides.max_position_embeddings: 0"),
    ({"vocab_size": 10**9}, "student.overrides.vocab_size"),
    ({"vocab_size": 10}, "student.overrides.vocab_size: 10 is smaller than the student's tokenizer (30 tokens)"),
    ({"hidden_dropout_prob": 1.5}, "student.overrides.hidden_dropout_prob: 1.5"),
    ({"attention_probs_dropout_prob": -0.1}, "student.overrides.attention_probs_dropout_prob"),
    ({"layer_norm_eps": "small"}, "student.overrides.layer_norm_eps: small"),
    ({"pad_token_id": 30}, "pad_token_id=30 is not a token of vocab_size=30"),
    ({"hidden_size": 6, "num_attention_heads": 4}, "hidden_size=6 does not divide by num_attention_heads=4"),
    ({"n" * TEN_MB: 1}, "student.overrides key 'nnnn"),
])
def test_overrides_no_model_can_have_are_refused_naming_the_key(overrides, named):
    with pytest.raises(ConfigError) as info:
        student_from_config(SMALL_BERT, overrides, AutoModelForSequenceClassification, tokens=30)
    assert named in str(info.value) and len(str(info.value)) < 300, str(info.value)[:300]


def test_good_overrides_still_build():
    student = student_from_config(SMALL_BERT, {"num_hidden_layers": 1, "hidden_dropout_prob": 0.0},
                                  AutoModelForSequenceClassification, tokens=30)
    assert student.config.num_hidden_layers == 1


@pytest.fixture(scope="module")
def bert_teacher(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification as Auto

    return Auto.from_pretrained(make_tiny_teacher(tmp_path_factory.mktemp("t") / "teacher"))


@pytest.mark.parametrize("overrides, named", [
    ({"hidden_size": 0}, "student.overrides.hidden_size: 0"),
    ({"hidden_size": 7}, "student.overrides.hidden_size: 7 is odd"),
    ({"hidden_size": True}, "student.overrides.hidden_size: True"),
    ({"num_hidden_layers": 0}, "student.overrides.num_hidden_layers: 0"),
    ({"embedding_size": -1}, "student.overrides.embedding_size: -1"),
    ({"classifier_hidden_size": 0}, "student.overrides.classifier_hidden_size: 0"),
    ({"dropout": 1.0}, "student.overrides.dropout: 1.0"),
    ({"dropout": -0.5}, "student.overrides.dropout: -0.5"),
])
def test_bilstm_overrides_are_checked(bert_teacher, overrides, named):
    with pytest.raises(ConfigError) as info:
        student_bilstm(bert_teacher, overrides)
    assert named in str(info.value), str(info.value)


# --- the same through the command line: exit 2, one line, nothing written -----------------------------------------

def _distill(recipe: dict, tmp: Path, *extra: str) -> list[str]:
    return ["distill", str(write_recipe(tmp / "recipe.yaml", recipe)), *extra]


def _assert_refused(argv: list[str], expected: str, tiny_recipe, tmp_path, capsys, monkeypatch) -> str:
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err[-2000:]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert expected in lines[-1], lines[-1]
    assert len(lines[-1]) < 600
    assert not Path(tiny_recipe["output_dir"]).exists()
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())
    return lines[-1]


def _config_student(recipe, overrides):
    recipe["student"] = {"init": "config", "overrides": overrides}
    return recipe


@pytest.mark.parametrize("change, expected", [
    (lambda r: with_key(r, "data.max_length", 65), "'data.max_length': 65 is more than the teacher can read (64"),
    (lambda r: _config_student(with_key(r, "data.max_length", 40), {"num_hidden_layers": 2,
                                                                     "max_position_embeddings": 32}),
     "'data.max_length': 40 is more than the student can read (32"),
    (lambda r: _config_student(r, {"num_attention_heads": 0}), "student.overrides.num_attention_heads: 0"),
    (lambda r: _config_student(r, {"hidden_size": -32}), "student.overrides.hidden_size: -32"),
    (lambda r: _config_student(r, {"num_hidden_layers": 0}), "student.overrides.num_hidden_layers: 0"),
    (lambda r: _config_student(r, {"vocab_size": 5}), "student.overrides.vocab_size: 5"),
    (lambda r: with_key(r, "training.batch_size", True), "'training.batch_size'"),
    (lambda r: with_key(r, "losses.1.temperature", float("inf")), "'losses[1].temperature'"),
    (lambda r: with_key(r, "training.seed", 2**32), "'training.seed'"),
])
def test_model_dependent_and_typed_checks_run_before_any_write(change, expected, tiny_recipe, tmp_path, capsys,
                                                               monkeypatch):
    _assert_refused(_distill(change(tiny_recipe), tmp_path), expected, tiny_recipe, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("text, expected", [
    (BOMB, "expands its YAML aliases to more than 10000 values (alias *d, line 5)"),
    ("name: a\nname: b\n", "gives key 'name' twice (lines 1 and 2)"),
    ("training: {epochs: 1e400}\n", "'training.epochs'"),
])
def test_recipe_files_through_the_cli(text, expected, tiny_recipe, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(text + yaml.safe_dump({k: v for k, v in tiny_recipe.items() if k not in ("name", "training")}))
    _assert_refused(["distill", str(path)], expected, tiny_recipe, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("args, expected", [
    (["eval", "{teacher}", "--dataset", "rotten_tomatoes", "--batch-size", "0"], "'--batch-size'"),
    (["eval", "{teacher}", "--dataset", "rotten_tomatoes", "--max-length", "0"], "'--max-length'"),
    (["eval", "{teacher}", "--dataset", "rotten_tomatoes", "--max-length", "100000"], "less than or equal to 8192"),
    (["compare", "{recipe}", "--seeds", "-1"], "--seeds -1"),
    (["compare", "{recipe}", "--seeds", str(2**32)], f"--seeds {2**32}"),
])
def test_cli_flags_are_bounded(args, expected, tiny_recipe, tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_recipe)
    argv = [a.replace("{teacher}", tiny_recipe["teacher"]["model"]).replace("{recipe}", str(recipe)) for a in args]
    _assert_refused(argv, expected, tiny_recipe, tmp_path, capsys, monkeypatch)


def test_a_model_section_is_never_a_plain_base_model():
    """Every section a recipe or comparison can hold inherits the strict base (else the guarantees above skip it)."""
    from kdkit.report import leaderboard
    from kdkit.schema import Strict

    sections = [cls for cls, _ in _sections()] + [leaderboard.Comparison, leaderboard.RunSpec, leaderboard.GridSpec]
    assert all(issubclass(cls, Strict) for cls in sections)
    assert not any(cls.__bases__ == (BaseModel,) for cls in sections)
