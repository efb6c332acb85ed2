"""The model card of an exported student: a ``README.md`` the Hugging Face Hub reads.

The YAML header holds what the Hub indexes (``base_model``, ``datasets``, ``license``, ``pipeline_tag``, ``tags``
and a ``model-index`` with the student's scores, see https://huggingface.co/docs/hub/model-cards); the body says
how the student was made, shows the teacher/student report table and the full recipe, so the card alone is enough
to reproduce the run.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from kdkit.assets import DATASETS, MODELS
from kdkit.report.report import render_markdown
from kdkit.report.results import metrics_of, primary_of


def _loss_list(losses: list[dict]) -> str:
    return ", ".join(f"{loss['name']}" + (f" (weight {loss['weight']:g})" if loss.get("weight") is not None else "")
                     for loss in losses) or "none"


def _hub_id(name: str | None, named: dict) -> str | None:
    """What the Hub can resolve: a kdkit named asset's hub id, a hub id as it is; ``None`` for a local folder or
    file (a path is no base model or dataset on the Hub; the card's body still names it)."""
    if not name:
        return None
    if name in named:
        return named[name].hub
    if name.startswith(("/", ".", "~")) or Path(name).expanduser().exists():
        return None
    return name


def _header(results: dict, recipe: dict, task: str, pipeline_tag: str, license: str) -> dict:
    teacher = _hub_id((recipe.get("teacher") or {}).get("model"), MODELS)
    dataset = _hub_id((recipe.get("data") or {}).get("dataset"), DATASETS)
    primary = primary_of(results)
    metrics = metrics_of(results["student"])
    names = [primary, *(name for name in metrics if name != primary)]
    return {
        **({"base_model": teacher} if teacher else {}),
        **({"datasets": [dataset]} if dataset else {}),
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": ["kdkit", "knowledge-distillation", task],
        "model-index": [{
            "name": recipe.get("name") or results["student"]["name"],
            "results": [{
                "task": {"type": pipeline_tag, "name": task},
                "dataset": {"type": dataset or "local",
                            "name": (recipe.get("data") or {}).get("dataset") or "local files",
                            **({"split": results["split"]} if results.get("split") else {})},
                "metrics": [{"name": name, "type": name, "value": metrics[name]} for name in names],
            }],
        }],
    }


def _how_made(results: dict, recipe: dict, task: str) -> str:
    student = results["student"]
    built = (recipe.get("student") or {}).get("init", "?")
    layers = (recipe.get("student") or {}).get("layers")
    made = (f"a student of {student['params'] / 1e6:.2f}M parameters built with `student.init: {built}`"
            + (f" (teacher layers {layers})" if layers else ""))
    teacher = results.get("teacher")
    source = (f"distilled from the teacher {teacher['name']} ({teacher['params'] / 1e6:.2f}M parameters) into "
              if teacher else "trained without a teacher as ")
    dataset = (recipe.get("data") or {}).get("dataset")
    return (f"A {task} model made with kdkit by knowledge distillation: {source}{made}, trained"
            + (f" on {dataset}" if dataset else "") + f" with the losses {_loss_list(recipe.get('losses') or [])}. "
            f"Scores are on the {results.get('split', '?')} split; the primary metric is {primary_of(results)}.")


def write_model_card(folder: Path, *, results: dict, recipe: dict, task: str, pipeline_tag: str,
                     license: str = "apache-2.0") -> Path:
    """Write ``folder/README.md`` for the student exported in ``folder`` and return its path.

    ``results`` is the run's evaluation (the format of :mod:`kdkit.report.results`), ``recipe`` the resolved recipe
    as a plain mapping (it is shown in full), ``task`` kdkit's task name (``classification``, ``retrieval``, ...)
    and ``pipeline_tag`` the Hub's (``text-classification``, ``sentence-similarity``, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safe_dump quotes whatever YAML would misread (a colon, a leading '*', 'yes'), so the header parses back
    header = yaml.safe_dump(_header(results, recipe, task, pipeline_tag, license), sort_keys=False,
                            allow_unicode=True)
    title = recipe.get("name") or results["student"]["name"]
    body = [f"# {title}", "", _how_made(results, recipe, task), "", "## Evaluation", "",
            render_markdown(results).rstrip("\n"), "", "## Recipe", "",
            "```yaml", yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip("\n"), "```", ""]
    path = folder / "README.md"
    path.write_text("---\n" + header + "---\n\n" + "\n".join(body))
    return path
