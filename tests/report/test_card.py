import re

import pytest
import yaml

from kdkit.report import write_model_card
from kdkit.report.report import render_markdown


def _entry(name, params, **metrics):
    return {"name": name, "params": params, "n": 1066, "metrics": metrics,
            "latency": {"1": {"median_s": 0.004, "p90_s": 0.005}}}


@pytest.fixture
def recipe():
    return {"name": "quickstart", "data": {"dataset": "rotten_tomatoes", "max_length": 64},
            "teacher": {"model": "minilm-l6"}, "student": {"init": "teacher_layers", "layers": [0, 2, 4]},
            "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
            "evaluation": {"split": "test", "dm_alpha": 0.5}}


@pytest.fixture
def results():
    return {"task": "classification", "primary_metric": "accuracy", "split": "test", "dm_alpha": 0.5,
            "teacher": _entry("minilm-l6", 22_713_216, accuracy=0.8, ece=0.05),
            "student": _entry("student", 15_000_000, ece=0.041, accuracy=0.7825)}


def _split(text: str) -> tuple[dict, str]:
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.DOTALL)
    assert match, "the card must open with a YAML header between two --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def test_card_header_is_what_the_hub_reads(tmp_path, recipe, results):
    path = write_model_card(tmp_path / "student", results=results, recipe=recipe, task="classification",
                            pipeline_tag="text-classification")
    assert path == tmp_path / "student" / "README.md"
    header, _ = _split(path.read_text())
    # named assets become their hub ids: the Hub resolves those, not kdkit names
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert header["datasets"] == ["cornell-movie-review-data/rotten_tomatoes"]
    assert header["license"] == "apache-2.0" and header["library_name"] == "transformers"
    assert header["pipeline_tag"] == "text-classification"
    assert header["tags"] == ["kdkit", "knowledge-distillation", "classification"]
    [model] = header["model-index"]
    [result] = model["results"]
    assert model["name"] == "quickstart" and result["task"] == {"type": "text-classification", "name": "classification"}
    assert result["dataset"] == {"type": "cornell-movie-review-data/rotten_tomatoes", "name": "rotten_tomatoes",
                                 "split": "test"}
    # the primary metric first, the values as the report's fractions
    assert result["metrics"] == [{"name": "accuracy", "type": "accuracy", "value": 0.7825},
                                 {"name": "ece", "type": "ece", "value": 0.041}]


def test_card_body_says_how_the_student_was_made_and_holds_the_report_and_recipe(tmp_path, recipe, results):
    text = write_model_card(tmp_path, results=results, recipe=recipe, task="classification",
                            pipeline_tag="text-classification", license="mit").read_text()
    header, body = _split(text)
    assert header["license"] == "mit"
    assert body.lstrip().startswith("# quickstart\n")
    paragraph = body.split("\n\n")[1]
    for fact in ("classification", "teacher minilm-l6 (22.71M parameters)", "15.00M parameters",
                 "`student.init: teacher_layers`", "[0, 2, 4]", "ce (weight 0.5), kd (weight 0.5)", "rotten_tomatoes",
                 "test split", "primary metric is accuracy"):
        assert fact in paragraph, fact
    assert render_markdown(results) in body
    recipe_block = re.search(r"```yaml\n(.*?)```", body, flags=re.DOTALL)
    assert recipe_block and yaml.safe_load(recipe_block.group(1)) == recipe


def test_teacher_free_run_on_local_files_has_no_base_model_nor_datasets(tmp_path, recipe, results):
    del recipe["teacher"], results["teacher"]
    recipe["data"] = {"train_file": "train.csv"}
    recipe["losses"] = [{"name": "label_smoothing", "weight": 1.0}]
    header, body = _split(write_model_card(tmp_path, results=results, recipe=recipe, task="classification",
                                           pipeline_tag="text-classification").read_text())
    assert "base_model" not in header and "datasets" not in header
    assert header["model-index"][0]["results"][0]["dataset"]["name"] == "local files"
    assert "without a teacher" in body and "label_smoothing (weight 1)" in body and "DM" not in body


def test_header_values_that_yaml_would_misread_are_escaped(tmp_path, recipe, results):
    recipe["name"] = "yes"  # YAML 1.1 reads a bare yes as True
    recipe["data"]["dataset"] = "org/set: v2 # not a comment"
    recipe["teacher"]["model"] = "*anchor-like"
    results.update(task="retrieval", primary_metric="mrr@10", split="dev")
    results["student"]["metrics"], results["teacher"]["metrics"] = {"mrr@10": 0.31}, {"mrr@10": 0.35}
    header, _ = _split(write_model_card(tmp_path, results=results, recipe=recipe, task="retrieval",
                                        pipeline_tag="sentence-similarity").read_text())
    assert header["model-index"][0]["name"] == "yes"
    assert header["datasets"] == ["org/set: v2 # not a comment"] and header["base_model"] == "*anchor-like"
    result = header["model-index"][0]["results"][0]
    assert result["metrics"] == [{"name": "mrr@10", "type": "mrr@10", "value": 0.31}]
    assert result["dataset"]["split"] == "dev" and header["tags"][-1] == "retrieval"
