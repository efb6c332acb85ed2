"""Schema-driven fuzzing: bad values for every recipe key of every task, every CLI flag and every data format.

The inputs are generated (``fuzz.py``) from the typed recipe of each registered task, from the click command tree
and from the data section's columns, so a task, key, loss or flag that lands later is fuzzed without a new list.
The contract for each input: exit code 2; one ``error:`` line (the last stderr line, the only one starting with
"error"), short, naming the key, flag or file; no traceback; nothing written under the output or cache directory
(or anywhere in the case's folder besides its inputs).

The deterministic sweeps (every key × every kind of bad value) run in the default tests, with a bounded
``hypothesis`` run of random bad values per kind; ``-m slow`` runs hypothesis with a larger budget.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz
from kdkit import config, terms
from kdkit.cli import app
from kdkit.tasks import TASKS
from tiny import (make_tiny_csv, make_tiny_generation_jsonl, make_tiny_lm, make_tiny_multimodal, make_tiny_pairs,
                  make_tiny_teacher)

BUDGET = {"default": 150, "slow": 3000}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher, data files and a valid recipe per task, shared by every case (cases never change them)."""
    root = tmp_path_factory.mktemp("fuzz-world")
    teacher = make_tiny_teacher(root / "teacher")
    csv = make_tiny_csv(root / "train.csv")
    bases = {"classification": {
        "name": "tiny", "data": {"train_file": str(csv), "max_length": 16}, "teacher": {"model": str(teacher)},
        "student": {"init": "teacher_layers", "layers": [0, 2]},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "training": {"max_steps": 2, "batch_size": 8, "save_steps": 2},
        "evaluation": {"latency_batch_sizes": [1], "latency_repeats": 1}}}
    pairs = make_tiny_pairs(root / "pairs.jsonl")  # the base trains on 40; the data cases use 12 other queries
    (root / "train-pairs.jsonl").write_text("\n".join(pairs.read_text().splitlines()[:40]) + "\n")
    bases["retrieval"] = {
        "name": "tiny-retrieval", "data": {"train_file": str(root / "train-pairs.jsonl"), "max_length": 24,
                                           "query_max_length": 8},
        "teacher": {"model": str(teacher)}, "student": {"init": "teacher_layers", "layers": [0, 2]},
        "losses": [{"name": "contrastive", "weight": 0.5}, {"name": "tct", "weight": 0.5}],
        "training": {"max_steps": 2, "batch_size": 8, "save_steps": 2}, "evaluation": {"latency_repeats": 1}}
    lm = make_tiny_lm(root / "lm")
    examples = make_tiny_generation_jsonl(root / "examples.jsonl")  # the base trains on 40, the cases use 12 others
    (root / "train-examples.jsonl").write_text("\n".join(examples.read_text().splitlines()[:40]) + "\n")
    bases["generation"] = {
        "name": "tiny-generation", "data": {"train_file": str(root / "train-examples.jsonl"), "max_prompt_length": 12,
                                            "prompt_tail": 1, "max_completion_length": 4},
        "teacher": {"model": str(lm)}, "student": {"init": "teacher_layers", "layers": [0, 2]},
        "losses": [{"name": "nll", "weight": 0.5}, {"name": "token_kd", "weight": 0.5}],
        "training": {"max_steps": 2, "batch_size": 8, "save_steps": 2},
        "evaluation": {"latency_batch_sizes": [1]}, "generation": {"max_new_tokens": 2, "speed_repeats": 1}}
    bases["dataset_distillation"] = {
        "name": "tiny-dd", "data": {"dataset": "digits", "max_train_samples": 200}, "distill": {"samples": 10},
        "training": {"iterations": 2, "batch_size": 32, "save_steps": 2},
        "evaluation": {"models": 1, "full_epochs": 1, "subset_steps": 2, "latency_batch_sizes": [1],
                       "latency_repeats": 1}}
    bases["policy_distillation"] = {
        "name": "tiny-dpd", "env": {"id": "Pendulum-v1"},
        "learners": [{"algo": "ppo", "hyperparameters": {"n_steps": 32, "batch_size": 16, "n_epochs": 1}}] * 2,
        "dpd": {"batch_size": 16, "steps": 1}, "training": {"timesteps": 32, "round_steps": 32, "save_steps": 1},
        "evaluation": {"episodes": 1, "latency_repeats": 1}}
    multimodal = make_tiny_multimodal(root / "multimodal")
    bases["multimodal"] = {
        "name": "tiny-multimodal",
        "data": {"train_file": str(multimodal), "image_size": 16, "max_length": 16,
                 "modalities": {"picture": {"kind": "image", "column": "image"},
                                "words": {"kind": "text", "column": "text"},
                                "table": {"kind": "tabular", "numeric": ["age"], "categorical": ["shop"]}}},
        "teacher": {"image": "small_cnn", "image_width": 4, "text": str(teacher), "hidden": 8, "tabular_dim": 4,
                    "finetune": {"max_steps": 2, "batch_size": 8}},
        "student": {"image": "small_cnn", "image_width": 4, "text": str(teacher), "text_layers": [0], "hidden": 8,
                    "tabular_dim": 4},
        "losses": [{"name": "ce"}, {"name": "kd"}, {"name": "msd", "weighting": "instance"}],
        "training": {"max_steps": 2, "batch_size": 8, "save_steps": 2},
        "evaluation": {"latency_batch_sizes": [1], "latency_repeats": 1}}
    return {"root": root, "teacher": teacher, "csv": csv, "bases": bases}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# --- recipe keys ---

def test_every_registered_task_has_a_valid_base_recipe(world, tmp_path):
    for task in TASKS:
        assert task in world["bases"], f"task '{task}' is not fuzzed: give it a base recipe in test_fuzz.world"
        config.parse_recipe({**world["bases"][task], "task": task})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_recipe_key_refuses_every_kind_of_bad_value(world, task):
    base = {**world["bases"][task], "task": task}
    cases = fuzz.recipe_cases(fuzz.recipe_model(task), base)
    distinct = {(c.id, repr(c.value), c.text) for c in cases}
    assert len(distinct) == len(cases)
    # every key of the task's recipe is fuzzed (a task with a small recipe has fewer cases, none left out)
    assert {c.key.label for c in cases} == {k.label for k in fuzz.keys(fuzz.recipe_model(task), base)}
    failures = fuzz.sweep(world["root"], cases, lambda case, folder: fuzz.run_recipe_case(case, base, folder))
    assert not failures, f"{len(failures)} of {len(cases)} bad inputs broke the contract:\n" + "\n".join(failures)


def _random_recipe_values(world, task, data, examples: list):
    base = {**world["bases"][task], "task": task}
    key = data.draw(st.sampled_from(fuzz.keys(fuzz.recipe_model(task), base)), label="key")
    if key.path[-1] == "name" and len(key.path) == 3:
        value = data.draw(fuzz._text(max_size=12).filter(lambda s: s not in terms.CONFIGS))
    else:
        value = data.draw(fuzz.bad_value(key), label="value")
    case = fuzz.Case(key, "random", value)
    folder = world["root"] / f"random-{len(examples)}"
    try:
        problem = fuzz.run_recipe_case(case, base, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    examples.append(case)
    assert problem is None, f"{key.dotted} = {fuzz.shorten(value)!r}: {problem}"


def _hypothesis(budget: str):
    return settings(max_examples=BUDGET[budget], deadline=None, database=None, derandomize=budget == "default",
                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("task", sorted(TASKS))
@_hypothesis("default")
@given(data=st.data())
def test_random_bad_values_of_recipe_keys(world, task, data):
    _random_recipe_values(world, task, data, [])


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
@_hypothesis("slow")
@given(data=st.data())
def test_random_bad_values_of_recipe_keys_large_budget(world, task, data):
    _random_recipe_values(world, task, data, [])


# --- command-line flags ---

def _base_argv(world, command: str, folder: Path) -> tuple[list[str], list[str]]:
    """(positional arguments, options) of a valid use of ``command`` that writes under ``folder`` only."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**world["bases"]["classification"], "output_dir": str(folder / "run")}))
    csv = str(world["csv"])
    picked = folder / "dyna"  # a finished DynaBERT run's report, as kdkit pick reads it
    picked.mkdir()
    entry = {"width": 1.0, "depth": 1.0, "heads": 4, "neurons": 37, "layers": [0], "params": 100, "dir": str(picked),
             "metrics": {"accuracy": 0.5}, "validation": {"accuracy": 0.5}, "latency": {"1": {"median_s": 0.001}}}
    (picked / "report.json").write_text(json.dumps({"primary_metric": "accuracy", "student": entry,
                                                    "sub_networks": [entry]}))
    return {"distill": ([str(recipe)], []), "cache": ([str(recipe)], []),
            "quickstart": ([], ["--output-dir", str(folder / "run")]),
            "eval": ([str(world["teacher"])], ["--train-file", csv, "--test-file", csv]),
            "compare": ([str(recipe)], ["--output-dir", str(folder / "cmp")]), "info": ([], []),
            "compress": ([str(recipe)], ["--params", "50%"]), "pick": ([str(picked)], ["--params", "50%"]),
            "export": ([str(world["teacher"])], ["--onnx", str(folder / "onnx")])}[command]


def _cli_group():
    import typer.main

    return typer.main.get_command(app)


def test_every_flag_is_fuzzed_and_numbers_declare_their_range():
    for flag in fuzz.flags(_cli_group()):
        assert flag.annotation in (int, float, str, bool), flag
        if flag.annotation in (int, float):
            assert flag.low is not None and flag.high is not None, f"{flag.command} {flag.opt}: declare min= and max="


def test_every_flag_refuses_every_kind_of_bad_value(world):
    cases = []
    for flag in fuzz.flags(_cli_group()):
        for kind, pieces, positional in fuzz.flag_values(flag):
            cases.append((flag, kind, pieces, positional))
    assert len(cases) >= 130

    class Item:
        def __init__(self, flag, kind, pieces, positional):
            self.flag, self.pieces, self.positional = flag, pieces, positional
            self.id = f"{flag.command} {flag.opt or flag.name.upper()}:{kind}"

    def run(item, folder):
        folder.mkdir(parents=True)
        args, options = _base_argv(world, item.flag.command, folder)
        if item.positional:
            args = []
        elif item.flag.opt in options:  # the bad value replaces the base's own use of the option
            i = options.index(item.flag.opt)
            options = options[:i] + options[i + 2:]
        argv = [item.flag.command, *args, *options, *item.pieces]
        return fuzz.run_case(folder, argv).problem(item.flag.names)

    failures = fuzz.sweep(world["root"], [Item(*case) for case in cases], run)
    assert not failures, f"{len(failures)} of {len(cases)} bad flags broke the contract:\n" + "\n".join(failures)


# --- data files ---

def _data(world, task) -> tuple[list[dict], tuple[str, ...], dict[str, str] | None]:
    """A task's good rows, the file formats it reads and its columns (None: from its ``*_column`` keys)."""
    import csv
    import json

    if task == "retrieval":  # queries the base's training file does not hold: a query belongs to one split
        lines = (world["root"] / "pairs.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines[40:52]], ("jsonl",), {"query": "query", "positive": "positive"}
    if task == "generation":
        lines = (world["root"] / "examples.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines[40:52]], ("jsonl",), {"prompt": "prompt",
                                                                         "completion": "completion"}
    if task == "multimodal":  # image paths made absolute: the broken files live in other folders
        path = Path(world["bases"]["multimodal"]["data"]["train_file"])
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))[:12]
        return [{**row, "image": str(path.parent / row["image"])} for row in rows], fuzz.FORMATS, None
    with open(world["csv"], newline="") as file:
        return list(csv.DictReader(file))[:12], fuzz.FORMATS, None


def _reads_files(task: str) -> bool:
    data = fuzz.recipe_model(task).model_fields.get("data")
    return data is not None and bool(fuzz.data_fields(data.annotation)[0])


FILE_TASKS = sorted(t for t in TASKS if _reads_files(t))


def test_the_tasks_without_data_files_are_the_ones_with_loops_of_their_own():
    assert set(TASKS) - set(FILE_TASKS) == {"dataset_distillation", "policy_distillation"}


@pytest.mark.parametrize("task", FILE_TASKS)
def test_every_data_file_format_refuses_every_kind_of_broken_file(world, task):
    data_model = fuzz.recipe_model(task).model_fields["data"].annotation
    rows, formats, columns = _data(world, task)
    cases = fuzz.data_cases(data_model, rows, formats=formats, columns=columns)
    assert len({c.id for c in cases}) == len(cases) >= 60

    def run(case, folder):
        folder.mkdir(parents=True)
        path = folder / f"broken-{case.key}.{case.fmt}"
        if case.content is None:
            path.mkdir()
        else:
            path.write_bytes(case.content)
        base = {**copy.deepcopy(world["bases"][task]), "task": task}
        base["data"][case.key] = str(path)
        base["output_dir"] = str(folder / "run")
        (folder / "recipe.yaml").write_text(yaml.safe_dump(base))
        outcome = fuzz.run_case(folder, ["distill", str(folder / "recipe.yaml")])
        problem = outcome.problem((path.name,))
        if problem is None:
            missing = [part for part in case.expect if part not in outcome.lines[-1]]
            problem = f"error line lacks {missing}: {outcome.lines[-1][:300]}" if missing else None
        return problem

    failures = fuzz.sweep(world["root"], cases, run)
    assert not failures, f"{len(failures)} of {len(cases)} broken files broke the contract:\n" + "\n".join(failures)


def _random_data(world, task, data):
    data_model = fuzz.recipe_model(task).model_fields["data"].annotation
    files, declared = fuzz.data_fields(data_model)
    rows, formats, columns = _data(world, task)
    columns = columns or declared
    key = data.draw(st.sampled_from(files), label="file key")
    fmt = data.draw(st.sampled_from(formats), label="format")
    column = data.draw(st.sampled_from(sorted(columns.values())), label="column")
    row = data.draw(st.integers(0, len(rows) - 1), label="row")
    rows[row][column] = data.draw(fuzz.bad_cell(fmt, column, columns.get("label_column")), label="value")
    folder = world["root"] / "random-data"
    try:
        folder.mkdir(parents=True)
        path = folder / f"broken.{fmt}"
        path.write_bytes(fuzz.render(rows, fmt))
        base = {**copy.deepcopy(world["bases"][task]), "task": task}
        base["data"][key] = str(path)
        base["output_dir"] = str(folder / "run")
        (folder / "recipe.yaml").write_text(yaml.safe_dump(base))
        outcome = fuzz.run_case(folder, ["distill", str(folder / "recipe.yaml")])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    problem = outcome.problem((path.name,))
    assert problem is None, problem
    line = fuzz.first_line_of_row(fmt, row)
    assert column in outcome.lines[-1] and (line is None or f"line {line}" in outcome.lines[-1]), outcome.lines[-1]


@pytest.mark.parametrize("task", FILE_TASKS)
@_hypothesis("default")
@given(data=st.data())
def test_random_bad_cells_of_data_files(world, task, data):
    _random_data(world, task, data)


@pytest.mark.slow
@pytest.mark.parametrize("task", FILE_TASKS)
@_hypothesis("slow")
@given(data=st.data())
def test_random_bad_cells_of_data_files_large_budget(world, task, data):
    _random_data(world, task, data)


def _random_flag(world, data):
    flag = data.draw(st.sampled_from([f for f in fuzz.flags(_cli_group()) if f.annotation is not bool]),
                     label="flag")
    value = data.draw(fuzz.bad_flag_value(flag), label="value")
    folder = world["root"] / "random-flag"
    try:
        folder.mkdir(parents=True)
        args, options = _base_argv(world, flag.command, folder)
        if flag.opt is None:  # after `--`, as a user passes a value starting with '-' (else it is an option)
            args, options = [], [*options, "--", value]
        else:
            if flag.opt in options:
                i = options.index(flag.opt)
                options = options[:i] + options[i + 2:]
            options = [*options, f"{flag.opt}={value}"]  # `--opt=value`: a value starting with '-' stays a value
        outcome = fuzz.run_case(folder, [flag.command, *args, *options])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    problem = outcome.problem(flag.names)
    assert problem is None, problem


@_hypothesis("default")
@given(data=st.data())
def test_random_bad_flag_values(world, data):
    _random_flag(world, data)


@pytest.mark.slow
@_hypothesis("slow")
@given(data=st.data())
def test_random_bad_flag_values_large_budget(world, data):
    _random_flag(world, data)
