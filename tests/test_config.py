import copy

import pytest

from kdkit.terms.logits import KDLoss
from kdkit.config import (apply_overrides, load_recipe, parse_recipe, read_recipe_file, resolve_recipe_path,
                          shipped_recipes)
from kdkit.errors import ConfigError
from tiny import with_key

BASE = {
    "data": {"dataset": "rotten_tomatoes"},
    "teacher": {"model": "minilm-l6"},
    "student": {"init": "teacher_layers", "layers": [0, 2, 4]},
    "losses": [{"name": "kd"}],
}


def test_minimal_recipe_gets_documented_defaults():
    recipe = parse_recipe(BASE)
    kd = recipe.losses[0]
    assert isinstance(kd, KDLoss)
    assert (kd.temperature, kd.t2_scaling, kd.temperature_on, kd.weight) == (2.0, True, "both", 1.0)
    assert recipe.data.max_length == 128 and recipe.evaluation.dm_alpha == 0.5
    assert str(recipe.resolved_output_dir()) == "runs/distill"


@pytest.mark.parametrize("path, value, expected", [
    ("colour", "red", "recipe key 'colour' is unknown; valid keys: name, task"),
    ("data.max_len", 12, "recipe key 'data.max_len' is unknown; valid keys: dataset"),
    ("data.max_length", "long", "recipe key 'data.max_length'"),
    ("data.max_length", -3, "greater than 0"),
    ("losses.0", {"name": "kdd"}, "unknown loss 'kdd'; valid: ce, kd"),
    ("losses.0", {"weight": 1}, "a loss needs 'name'"),
    ("losses.0", {"name": "kd", "temperature": 0}, "recipe key 'losses[0].temperature'"),
    ("losses.0", {"name": "kd", "weight": -1}, "recipe key 'losses[0].weight'"),
    ("losses.0", {"name": "kd", "layer_map": "skip"},
     "recipe key 'losses[0].layer_map' is unknown; valid keys: weight"),
    ("losses.0", {"name": "hidden_mse", "layer_map": "zigzag"}, "recipe key 'losses[0].layer_map'"),
    ("losses.0", {"name": "hidden_mse", "layer_map": "pairs"}, "layer_map 'pairs' needs pairs"),
    ("losses", [], "recipe key 'losses'"),
    ("student.init", "magic", "recipe key 'student.init'"),
    ("student", {"init": "teacher_layers"}, "needs student.layers"),
    ("student", {"init": "pretrained"}, "needs student.model"),
    ("teacher", {}, "recipe key 'teacher.model' is required"),
    ("training", {"epochs": 0}, "recipe key 'training.epochs'"),
    ("training", {"batch_size": "big"}, "recipe key 'training.batch_size'"),
    ("training", {"lr": 1e-3}, "recipe key 'training.lr' is unknown"),
    ("training", {"batch_size": True}, "recipe key 'training.batch_size': Input should be a number"),
    ("training", {"seed": -1}, "recipe key 'training.seed'"),
    ("training", {"epochs": float("inf")}, "recipe key 'training.epochs': Input should be a finite number"),
    ("losses.0", {"name": "kd", "t2_scaling": 1}, "recipe key 'losses[0].t2_scaling': Input should be true or false"),
    ("losses.0", {"name": "kd", "temperature": 1e-30}, "recipe key 'losses[0].temperature'"),
    ("evaluation", {"dm_alpha": 1.5}, "recipe key 'evaluation.dm_alpha'"),
    ("data", {"dataset": "x", "train_file": "y.csv"}, "exactly one of data.dataset"),
])
def test_bad_recipes_give_one_line_naming_the_key(path, value, expected):
    with pytest.raises(ConfigError) as info:
        parse_recipe(with_key(copy.deepcopy(BASE), path, value))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_recipe_must_be_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_recipe(["kd"])


def test_overrides_parse_yaml_values_and_index_lists():
    data = apply_overrides(BASE, ["losses.0.temperature=4", "training.epochs=1.5", "student.layers=[1, 3]",
                                  "teacher.finetune.epochs=1"])
    recipe = parse_recipe(data)
    assert recipe.losses[0].temperature == 4.0
    assert recipe.training.epochs == 1.5
    assert recipe.student.layers == [1, 3]
    assert recipe.teacher.finetune.epochs == 1
    assert BASE["losses"][0] == {"name": "kd"}, "overrides must not change the caller's dict"


@pytest.mark.parametrize("item, expected", [
    ("training.epochs", "expected key=value"),
    ("losses.3.weight=1", "not an index of the 1-item list 'losses'"),
    ("data.dataset.x=1", "'data.dataset' is not a mapping"),
    ("losses.99999999999999.weight=1", "'99999999999999' is not an index"),
    ("training.extra=&a [*a]", "the value uses the YAML alias \\*a inside its own anchor"),
    ("training={epochs: 1, epochs: 2}", "gives key 'epochs' twice"),
])
def test_bad_overrides(item, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(BASE, [item])


def test_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_recipe_file(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_recipe_file(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_recipe_file(broken)
    duplicated = tmp_path / "duplicated.yaml"
    duplicated.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"gives key 'name' twice \(lines 1 and 2\)"):
        read_recipe_file(duplicated)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_recipe_file(tagged)


def test_shipped_recipes_are_valid():
    assert "quickstart" in shipped_recipes()
    for name in shipped_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name
    with pytest.raises(ConfigError, match="shipped: .*quickstart"):  # every shipped name, sorted
        resolve_recipe_path("no-such-recipe")
