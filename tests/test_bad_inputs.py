"""Bad input, systematically: every malformed recipe, data file or model gives one line, exit code 2, nothing written.

Each row of :data:`CASES` builds one broken input from the tiny recipe (``conftest.tiny_recipe``) and runs
``kdkit distill`` in-process. The contract checked for every row: exit code 2; the last stderr line starts with
``error: ``, is the only error line, is short (a 10 MB value is never echoed back) and names the culprit (the
expected fragment); no traceback; no output directory and nothing in the kdkit cache (no teacher-cache or
fine-tuning temp folder). Every row fails in validation, before any training, so the whole table takes seconds.

A very long text (a 10 MB line) is not a bad input: it is truncated to ``data.max_length`` tokens like any
other text, and :func:`test_a_10_mb_text_trains_truncated_to_max_length` checks that it trains.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import pytest

from tiny import make_tiny_teacher, run_cli, with_key, write_recipe

TEN_MB = 10 * 1024 * 1024
ROWS = [("good fun film", "pos"), ("bad dull plot", "neg"), ("great movie", "pos"), ("awful film", "neg")]
OTHER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]


@pytest.fixture(autouse=True)
def _offline_and_own_cache(monkeypatch, tmp_path):
    """A name that is not local goes to the hub; offline it fails at once instead of retrying for a minute."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))


# --- builders: each returns ``setup(recipe, tmp) -> argv`` that writes the broken input and names the command ---

def _distill(recipe: dict, tmp: Path, *extra: str) -> list[str]:
    return ["distill", str(write_recipe(tmp / "recipe.yaml", recipe)), *extra]


def key(path: str, value):
    """Set one recipe key (dotted, list indices as numbers) to a bad value; ``"{csv}"`` is the tiny csv's path."""
    def setup(recipe, tmp):
        return _distill(with_key(recipe, path, recipe["data"]["train_file"] if value == "{csv}" else value), tmp)
    return setup


def drop(path: str):
    """Remove one recipe key."""
    def setup(recipe, tmp):
        *parents, last = path.split(".")
        node = recipe
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]
        return _distill(recipe, tmp)
    return setup


def add_loss(**loss):
    return lambda recipe, tmp: _distill({**recipe, "losses": [*recipe["losses"], loss]}, tmp)


def sets(*items: str):
    """A valid recipe with bad ``--set`` overrides."""
    def setup(recipe, tmp):
        return _distill(recipe, tmp, *[arg for item in items for arg in ("--set", item)])
    return setup


def recipe_bytes(content: bytes, name: str = "recipe.yaml"):
    """A recipe file with these exact bytes."""
    def setup(recipe, tmp):
        (tmp / name).write_bytes(content)
        return ["distill", str(tmp / name)]
    return setup


def argv(*args: str):
    """A command line as given; ``{tmp}`` is replaced by the test's folder."""
    return lambda recipe, tmp: [a.replace("{tmp}", str(tmp)) for a in args]


def _csv(rows, header="text,label") -> bytes:
    return ("\n".join([header, *(f"{t},{l}" for t, l in rows)]) + "\n").encode()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD_JSONL = _jsonl([{"text": t, "label": l} for t, l in ROWS])


def data_file(split: str, name: str, content: bytes | None, **data_keys):
    """Write ``content`` to ``name`` and use it as the ``split`` file (``None``: make ``name`` a directory).

    A bad validation/test file comes with a good train file of the same format.
    """
    def setup(recipe, tmp):
        path = tmp / name
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        if split != "train" and name.endswith(".jsonl"):
            (tmp / "good.jsonl").write_bytes(GOOD_JSONL)
            recipe["data"]["train_file"] = str(tmp / "good.jsonl")
        recipe["data"][f"{split}_file"] = str(path)
        recipe["data"].update(data_keys)
        return _distill(recipe, tmp)
    return setup


def teacher_folder(make):
    """A teacher folder built by ``make(folder, tiny_teacher)``."""
    def setup(recipe, tmp):
        folder = tmp / "model"
        make(folder, Path(recipe["teacher"]["model"]))
        recipe["teacher"]["model"] = str(folder)
        return _distill(recipe, tmp)
    return setup


def _copy_without(*names):
    def make(folder, teacher):
        shutil.copytree(teacher, folder, ignore=shutil.ignore_patterns(*names))
    return make


def _with_file(name: str, content: bytes):
    """The teacher with one file replaced."""
    def make(folder, teacher):
        shutil.copytree(teacher, folder)
        (folder / name).write_bytes(content)
    return make


def _with_config_key(name: str, value):
    def make(folder, teacher):
        shutil.copytree(teacher, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, name: value}))
    return make


def _bigger_tokenizer(folder, teacher):
    """The teacher's weights with the tokenizer of a model that has more tokens."""
    make_tiny_teacher(folder, vocab=[*OTHER_VOCAB, *(f"word{i}" for i in range(40))])
    for weights in teacher.glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)
    shutil.copy(teacher / "config.json", folder / "config.json")


def _three_labels(folder, teacher):
    make_tiny_teacher(folder, num_labels=3)


def pretrained_student(make, *losses: dict):
    """A ``student.init: pretrained`` built by ``make(folder)``, with extra losses."""
    def setup(recipe, tmp):
        make(tmp / "student")
        recipe["student"] = {"init": "pretrained", "model": str(tmp / "student")}
        recipe["losses"] += list(losses)
        return _distill(recipe, tmp)
    return setup


def _student_vocab_beyond_teacher(recipe, tmp):
    """Token losses, and the student uses words the teacher's 8-token vocabulary lacks."""
    recipe["student"] = {"init": "pretrained", "model": recipe["teacher"]["model"]}
    recipe["teacher"]["model"] = str(make_tiny_teacher(tmp / "small-vocab", vocab=OTHER_VOCAB))
    recipe["losses"].append({"name": "hidden_mse", "layer_map": "uniform"})
    return _distill(recipe, tmp)


def config_student(overrides: dict, *losses: dict):
    def setup(recipe, tmp):
        recipe["student"] = {"init": "config", "overrides": overrides}
        recipe["losses"] += list(losses)
        return _distill(recipe, tmp)
    return setup


def cache_dir_with(**loss):
    """``teacher.cache`` set to a folder (inside the kdkit cache, which must stay empty) and one more loss."""
    def setup(recipe, tmp):
        recipe["teacher"]["cache"] = str(tmp / "cache" / "teacher-signals")
        return add_loss(**loss)(recipe, tmp)
    return setup


def dataset(name: str):
    """Train on a named (or hub) dataset instead of the tiny csv."""
    def setup(recipe, tmp):
        recipe["data"] = {"dataset": name, "max_length": 16}
        return _distill(recipe, tmp)
    return setup


HIDDEN_PAIRS = {"name": "hidden_mse", "layer_map": "pairs"}


CASES = [
    # --- recipes: unknown keys at every level ---
    ("unknown-top-key", key("colour", "red"), "'colour' is unknown"),
    ("unknown-data-key", key("data.textcolumn", "review"), "'data.textcolumn' is unknown"),
    ("unknown-teacher-key", key("teacher.path", "x"), "'teacher.path' is unknown"),
    ("unknown-finetune-key", key("teacher.finetune", {"epoch": 1}), "'teacher.finetune.epoch' is unknown"),
    ("unknown-student-key", key("student.layer", [0]), "'student.layer' is unknown"),
    ("unknown-training-key", key("training.epoch", 1), "'training.epoch' is unknown"),
    ("unknown-evaluation-key", key("evaluation.splits", ["test"]), "'evaluation.splits' is unknown"),
    ("unknown-loss-key", key("losses.1.temp", 4), "'losses[1].temp' is unknown"),
    ("unknown-training-extra", key("training.extra", {"bogus_field": 1}), "'training.extra': 'bogus_field'"),
    ("unknown-finetune-extra", key("teacher.finetune", {"extra": {"bogus_field": 1}}),
     "'teacher.finetune.extra': 'bogus_field'"),
    ("training-extra-typo", key("training.extra", {"bf61": True}), "did you mean 'bf16'"),
    # --- recipes: wrong types and values ---
    ("epochs-not-a-number", key("training.epochs", "many"), "training.epochs"),
    ("max-length-not-int", key("data.max_length", "long"), "data.max_length"),
    ("max-length-zero", key("data.max_length", 0), "data.max_length"),
    ("layers-a-string", key("student.layers", "0,2"), "student.layers"),
    ("data-a-list", key("data", ["train.csv"]), "'data'"),
    ("losses-a-mapping", key("losses", {"name": "ce"}), "'losses'"),
    ("losses-empty", key("losses", []), "'losses'"),
    ("evaluation-split-dev", key("evaluation.split", "dev"), "evaluation.split"),
    ("batch-size-zero", key("training.batch_size", 0), "training.batch_size"),
    ("negative-weight", key("losses.0.weight", -0.5), "losses[0].weight"),
    ("zero-temperature", key("losses.1.temperature", 0), "losses[1].temperature"),
    ("negative-temperature", key("losses.1.temperature", -2.0), "losses[1].temperature"),
    ("logit-mse-zero-temperature", add_loss(name="logit_mse", temperature=0), "losses[2].temperature"),
    ("dataset-and-train-file", key("data.dataset", "rotten_tomatoes"), "exactly one of data.dataset"),
    ("training-extra-bad-value", key("training.extra", {"lr_scheduler_type": "zigzag"}), "zigzag"),
    ("scheduler-unknown", key("training.lr_scheduler_type", "zigzag"), "zigzag"),
    ("finetune-extra-bad-value", key("teacher.finetune", {"extra": {"lr_scheduler_type": "zigzag"}}), "zigzag"),
    ("latency-batch-size-zero", key("evaluation.latency_batch_sizes", [1, 0]), "evaluation.latency_batch_sizes"),
    ("pretrained-student-without-model", key("student", {"init": "pretrained"}), "needs student.model"),
    # --- recipes: names ---
    ("unknown-loss", key("losses.0", {"name": "hinton"}), "unknown loss 'hinton'"),
    ("loss-without-name", key("losses.0", {"weight": 1.0}), "needs 'name'"),
    ("unknown-layer-map", add_loss(name="hidden_mse", layer_map="diagonal"), "losses[2].layer_map"),
    ("missing-data-section", drop("data"), "'data' is required"),
    ("missing-teacher-model", drop("teacher.model"), "'teacher.model' is required"),
    ("unknown-dataset", dataset("rotten-tomatoes"), "rotten-tomatoes"),
    ("unknown-named-model", key("teacher.model", "minilm-l12"), "minilm-l12"),
    ("student-init-unknown", key("student.init", "distil"), "student.init"),
    ("student-layers-empty", key("student.layers", []), "student.layers"),
    # --- recipes: layer maps that cannot fit the models (teacher 4 blocks, student 2) ---
    ("pair-teacher-beyond-depth", add_loss(**HIDDEN_PAIRS, pairs=[[9, 1]]), "teacher index 9"),
    ("pair-student-beyond-depth", add_loss(**HIDDEN_PAIRS, pairs=[[2, 3]]), "student index 3"),
    ("pair-negative-index", add_loss(**HIDDEN_PAIRS, pairs=[[-1, 1]]), "-1"),
    ("attention-on-embedding", add_loss(name="attention_mse", layer_map="pairs", pairs=[[0, 0]]), "embedding"),
    ("value-relation-on-embedding", add_loss(name="value_relation", layer_map="pairs", pairs=[[0, 0]]),
     "embedding"),
    ("pair-of-one", add_loss(**HIDDEN_PAIRS, pairs=[[1]]), "losses[2].pairs"),
    ("pair-with-a-string", add_loss(**HIDDEN_PAIRS, pairs=[["a", 2]]), "losses[2].pairs"),
    ("pair-of-three", add_loss(**HIDDEN_PAIRS, pairs=[[1, 1, 1]]), "losses[2].pairs"),
    ("pairs-without-list", add_loss(name="hidden_mse", layer_map="pairs"), "needs pairs"),
    ("pairs-with-uniform", add_loss(name="hidden_mse", pairs=[[1, 1]]), "only read with layer_map 'pairs'"),
    ("student-deeper-uniform", config_student({"num_hidden_layers": 6}, {"name": "hidden_mse"}), "6"),
    ("student-deeper-emb-skip", config_student({"num_hidden_layers": 5}, {"name": "pkd", "layer_map": "emb_skip"}),
     "5"),
    ("cache-dir-for-a-live-only-loss", cache_dir_with(name="attention_kl", layer_map="pairs", pairs=[[4, 2]]),
     "cannot use a teacher cache"),
    ("relation-heads-not-dividing", add_loss(name="value_relation", relation_heads=5), "relation_heads 5"),
    # --- recipes: --set and the recipe file itself ---
    ("set-without-equals", sets("training.epochs"), "expected key=value"),
    ("set-empty-key", sets("=3"), "expected key=value"),
    ("set-bad-yaml", sets("training.epochs=[1"), "not valid YAML"),
    ("set-index-out-of-range", sets("losses.5.weight=1"), "'5' is not an index"),
    ("set-through-a-scalar", sets("name.first=x"), "'name' is not a mapping"),
    ("set-unknown-key", sets("training.epoch=1"), "'training.epoch' is unknown"),
    ("set-without-value", argv("distill", "{tmp}/recipe.yaml", "--set"), "--set"),
    ("cli-missing-recipe", argv("distill"), "Missing argument"),
    ("cli-unknown-option", argv("distill", "{tmp}/recipe.yaml", "--overwrite-all"), "--overwrite-all"),
    ("empty-recipe", recipe_bytes(b""), "is empty"),
    ("recipe-a-list", recipe_bytes(b"- name: x\n- data: y\n"), "must be a mapping"),
    ("recipe-a-string", recipe_bytes(b"just words\n"), "must be a mapping"),
    ("recipe-python-tag", recipe_bytes(b"name: !!python/object/apply:os.system ['echo pwned']\n"),
     "not valid YAML"),
    ("recipe-bad-yaml", recipe_bytes(b"name: [unclosed\n"), "not valid YAML"),
    ("recipe-not-utf8", recipe_bytes(b"name: caf\xe9\n"), "not valid YAML"),
    ("recipe-missing", argv("distill", "{tmp}/nope.yaml"), "nope.yaml' does not exist"),
    ("recipe-unknown-name", argv("distill", "quickstrat"), "quickstrat"),
    ("recipe-a-directory", argv("distill", "{tmp}"), "is a directory"),
    # --- data files ---
    ("csv-missing", key("data.train_file", "/no/such/train.csv"), "/no/such/train.csv' does not exist"),
    ("csv-empty", data_file("train", "train.csv", b""), "is empty"),
    ("jsonl-empty", data_file("train", "train.jsonl", b"\n\n"), "is empty"),
    ("csv-header-only", data_file("train", "train.csv", b"text,label\n"), "has no rows"),
    ("csv-no-text-column", data_file("train", "train.csv", _csv(ROWS, "review,label")), "no column 'text'"),
    ("csv-no-label-column", data_file("train", "train.csv", _csv(ROWS, "text,stars")), "no column 'label'"),
    ("jsonl-no-text-column", data_file("train", "train.jsonl", _jsonl([{"review": t, "label": l} for t, l in ROWS])),
     "no column 'text'"),
    ("jsonl-no-label-column", data_file("train", "train.jsonl", _jsonl([{"text": t} for t, _ in ROWS])),
     "no column 'label'"),
    ("label-column-misnamed", data_file("train", "train.csv", _csv(ROWS), label_column="sentiment"),
     "no column 'sentiment'"),
    ("csv-empty-label", data_file("train", "train.csv", _csv(ROWS + [("fine film", "")])), "example 5"),
    ("jsonl-float-labels", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": i / 2}
                                                                     for i, (t, _) in enumerate(ROWS)])), "0.5"),
    ("jsonl-list-labels", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": [l]} for t, l in ROWS])),
     "['pos']"),
    ("jsonl-dict-labels", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": {"y": l}}
                                                                    for t, l in ROWS])), "label"),
    ("jsonl-mixed-label-kinds", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": [1, "a"][i % 2]}
                                                                          for i, (t, _) in enumerate(ROWS)])),
     "mix numbers and strings"),
    ("jsonl-text-not-string", data_file("train", "train.jsonl", _jsonl([{"text": 3, "label": l} for _, l in ROWS])),
     "not a string"),
    ("jsonl-broken-line", data_file("train", "train.jsonl", GOOD_JSONL + b'{"text": "x", "label"\n'), "jsonl"),
    ("csv-ragged-row", data_file("train", "train.csv", _csv(ROWS) + b"a,b,c,d\n"), "cannot be parsed"),
    ("csv-test-label-unseen", data_file("test", "test.csv", _csv([("good film", "meh")])), "'meh'"),
    ("jsonl-validation-label-unseen", data_file("validation", "dev.jsonl", _jsonl([{"text": "x", "label": "meh"}])),
     "'meh'"),
    ("csv-not-utf8", data_file("train", "train.csv", _csv(ROWS) + b"caf\xe9 film,pos\n"), "not UTF-8"),
    ("jsonl-not-utf8", data_file("train", "train.jsonl", GOOD_JSONL + b'{"text": "caf\xe9", "label": "pos"}\n'),
     "not UTF-8"),
    ("csv-10mb-line-no-newline", data_file("train", "train.csv", b"x" * TEN_MB), "no column 'text'"),
    ("jsonl-10mb-line-not-json", data_file("train", "train.jsonl", b"x" * TEN_MB), "jsonl"),
    ("data-file-a-directory", data_file("train", "train.csv", None), "is a directory"),
    ("data-file-txt", data_file("train", "train.txt", _csv(ROWS)), "extension '.txt'"),
    ("data-file-parquet", data_file("train", "train.parquet", b"PAR1"), "extension '.parquet'"),
    ("csv-float-labels", data_file("train", "train.csv", _csv([(t, i / 2) for i, (t, _) in enumerate(ROWS)])),
     "0.5"),
    ("json-a-mapping", data_file("train", "train.json", b'{"text": "good", "label": "pos"}'), "train.json"),
    ("label-column-is-the-text", data_file("train", "train.csv", _csv([(f"film {i}", "pos") for i in range(30)]),
                                                    label_column="text"), "(30 in all)"),
    ("single-class", data_file("train", "train.csv", _csv([(t, "pos") for t, _ in ROWS])), "at least two labels"),
    ("test-file-missing", key("data.test_file", "/no/such/test.csv"), "/no/such/test.csv"),
    # --- data files: each problem named with its file, line and column, before tokenising ---
    ("jsonl-null-line", data_file("train", "train.jsonl", GOOD_JSONL + b"null\n"), "train.jsonl', line 5 is null"),
    ("jsonl-number-line", data_file("train", "train.jsonl", b"3\n" + GOOD_JSONL), "train.jsonl', line 1 is a number"),
    ("jsonl-list-line", data_file("train", "train.jsonl", GOOD_JSONL + b'["good", "pos"]\n'), "line 5 is a list"),
    ("jsonl-string-line", data_file("train", "train.jsonl", GOOD_JSONL + b'"good film"\n'), "line 5 is a string"),
    ("jsonl-broken-after-blank", data_file("train", "train.jsonl", GOOD_JSONL + b'\n{"text": 1,}\n'),
     "train.jsonl', line 6 cannot be parsed as jsonl"),
    ("csv-nan-among-numbers", data_file("train", "train.csv", _csv([(t, i % 2) for i, (t, _) in enumerate(ROWS)]
                                                                   + [("fine film", "NaN")])),
     "train.csv', line 6, example 5: label 'NaN' marks a missing value"),
    ("jsonl-nan-string-label", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": i % 2} for i, (t, _)
                                                                          in enumerate(ROWS)] + [{"text": "ok",
                                                                                                  "label": "nan"}])),
     "line 5, example 5: label 'nan'"),
    ("jsonl-null-label-line", data_file("train", "train.jsonl", _jsonl([{"text": "ok", "label": None}]) + GOOD_JSONL),
     "train.jsonl', line 1, example 1: label"),
    ("csv-whitespace-text", data_file("train", "train.csv", _csv(ROWS + [("   ", "pos")])),
     "train.csv', line 6, example 5: text '   ' is empty or only whitespace"),
    ("csv-empty-text", data_file("train", "train.csv", _csv(ROWS[:2] + [("", "pos")] + ROWS[2:])),
     "line 4, example 3: text '' is empty"),
    ("jsonl-null-text", data_file("train", "train.jsonl", GOOD_JSONL + _jsonl([{"text": None, "label": "pos"}])),
     "line 5, example 5: text nan is empty or null"),
    ("jsonl-nan-text", data_file("train", "train.jsonl", GOOD_JSONL + b'{"text": NaN, "label": "pos"}\n'),
     "line 5, example 5: text nan"),
    ("jsonl-mixed-labels-line", data_file("train", "train.jsonl", _jsonl([{"text": t, "label": [1, 2, "pos", 1][i]}
                                                                          for i, (t, _) in enumerate(ROWS)])),
     "line 3, example 3: label 'pos' is a string but line 1 has the number 1"),
    ("csv-number-among-strings", data_file("train", "train.csv", _csv(ROWS + [("fine film", "3")])),
     "line 6, example 5: label '3' is a number"),
    ("jsonl-fraction-label-line", data_file("train", "train.jsonl",
                                            GOOD_JSONL + _jsonl([{"text": "ok", "label": 1.5}])),
     "line 5, example 5: label 1.5 is not a class"),
    ("csv-test-label-unseen-line", data_file("test", "test.csv", _csv([("good film", "pos"), ("ok", "meh")])),
     "test.csv', line 3, example 2: label 'meh' of the test split"),
    ("csv-tiny-train-no-validation", data_file("train", "train.csv", _csv(ROWS[:3])),
     "the validation split takes 0.1 of each label's examples, rounded, and would be empty"),
    ("jsonl-tiny-train-no-test", data_file("validation", "dev.jsonl", GOOD_JSONL), "at least 6 examples for one test"),
    ("validation-header-only", data_file("validation", "dev.csv", b"text,label\n"),
     "dev.csv' has no rows below its header (line 1); the validation split"),
    ("test-jsonl-blank-lines", data_file("test", "test.jsonl", b"\n  \n"), "test.jsonl' is empty; the test split"),
    ("csv-header-only-after-blank", data_file("train", "train.csv", b"\ntext,label\n"), "below its header (line 2)"),
    ("tsv-ragged-row-line", data_file("train", "train.tsv", _csv(ROWS, "text\tlabel").replace(b",", b"\t")
                                      + b"a\tb\tc\n"), "train.tsv', line 6 cannot be parsed as tsv: 3 fields"),
    # --- models ---
    ("teacher-a-file", key("teacher.model", "{csv}"), "is a file"),
    ("teacher-corrupt-weights", teacher_folder(_with_file("model.safetensors", b"garbage")), "weights"),
    ("teacher-weights-not-matching-config", teacher_folder(_with_config_key("hidden_size", 64)), "weights"),
    ("teacher-tokenizer-larger-than-model", teacher_folder(_bigger_tokenizer), "vocab_size"),
    ("teacher-folder-missing", key("teacher.model", "/no/such/model"), "/no/such/model"),
    ("teacher-relative-folder-missing", key("teacher.model", "./no_such_model"), "no_such_model"),
    ("teacher-without-config", teacher_folder(_copy_without("config.json")), "config.json"),
    ("teacher-without-weights", teacher_folder(_copy_without("*.safetensors", "*.bin")), "weights"),
    ("teacher-without-tokenizer", teacher_folder(_copy_without("tokenizer*", "vocab.txt", "special_tokens*")),
     "tokenizer"),
    ("teacher-config-not-json", teacher_folder(_with_file("config.json", b"{not json")), "config.json"),
    ("teacher-unknown-model-type", teacher_folder(_with_file("config.json", b'{"model_type": "no-such-arch"}')),
     "no-such-arch"),
    ("teacher-3-labels-data-2", teacher_folder(_three_labels), "3 labels but the data has 2"),
    ("student-3-labels-data-2", pretrained_student(lambda f: make_tiny_teacher(f, num_labels=3)),
     "student.model"),
    ("student-missing-folder", key("student", {"init": "pretrained", "model": "/no/such/student"}),
     "/no/such/student"),
    ("student-config-missing-base", key("student", {"init": "config", "model": "/no/such/base",
                                                    "overrides": {"num_hidden_layers": 2}}), "/no/such/base"),
    ("student-config-unknown-field", config_student({"num_hiden_layers": 2}), "num_hiden_layers"),
    ("student-config-heads-not-dividing", config_student({"hidden_size": 30}), "hidden_size=30"),
    ("vocabulary-unmappable", _student_vocab_beyond_teacher, "no counterpart"),
    ("student-layer-out-of-range", key("student.layers", [0, 9]), "9"),
    ("student-layer-negative", key("student.layers", [-1, 2]), "-1"),
    ("student-layers-not-increasing", key("student.layers", [2, 0]), "not strictly increasing"),
    ("student-layers-repeated", key("student.layers", [1, 1]), "not strictly increasing"),
    ("universal-kd-module-without-a-tensor", add_loss(name="universal_kd", student_modules=["bert"]), "'bert' outputs"),
]



@pytest.mark.parametrize("setup, expected", [pytest.param(s, e, id=i) for i, s, e in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(setup, expected, tiny_recipe, tmp_path, capsys):
    code, out, err = run_cli(setup(tiny_recipe, tmp_path), capsys)
    lines = err.strip().splitlines()  # progress bars of model loading may come before the error line
    assert code == 2, err[-2000:]
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    assert sum(line.lstrip().lower().startswith("error") for line in lines) == 1, err[-2000:]
    assert "Traceback" not in err
    assert expected in lines[-1]
    assert len(lines[-1]) < 600, lines[-1][:600]
    assert not Path(tiny_recipe["output_dir"]).exists()
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir()), sorted(cache.rglob("*"))


def test_the_table_is_large_and_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 50 and len(set(ids)) == len(ids)


def test_a_10_mb_text_trains_truncated_to_max_length(tiny_recipe, tmp_path, capsys):
    """Not a bad input: a 10 MB text on the last line of a jsonl file, without a final newline, is read, truncated
    to ``data.max_length`` tokens like any other text, and trained on.

    Refusing long texts would refuse real long documents; cutting them by characters before tokenising cannot
    know how many characters ``max_length`` tokens take. The price is time: the tokenizer encodes the whole text
    before truncating (about 10 s for these 10 MB), which makes this the slowest test of the file."""
    long_text = ("the movie was good fun " * (TEN_MB // 23 + 1))[:TEN_MB]
    rows = [{"text": t, "label": l} for t, l in ROWS * 4] + [{"text": long_text, "label": "pos"}]
    (tmp_path / "train.jsonl").write_bytes(_jsonl(rows).rstrip(b"\n"))
    (tmp_path / "eval.jsonl").write_bytes(GOOD_JSONL)
    tiny_recipe["data"] = {"train_file": str(tmp_path / "train.jsonl"), "validation_file": str(tmp_path / "eval.jsonl"),
                           "test_file": str(tmp_path / "eval.jsonl"), "max_length": 16}
    tiny_recipe["training"].update(max_steps=2, save_steps=2)
    code, _, err = run_cli(_distill(tiny_recipe, tmp_path), capsys)
    assert code == 0, err[-2000:]
    assert (tmp_path / "run" / "student" / "config.json").is_file()
