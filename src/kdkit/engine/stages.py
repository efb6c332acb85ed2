"""Multi-stage recipes (``stages``): several trainings in a row, each from the student the stage before exported.

TinyBERT (Jiao et al., EMNLP Findings 2020) distils the intermediate layers first (hidden states, attention
scores) and the prediction layer after, from the student the first stage left; CKD's task-specific stage (Park et
al., EMNLP 2021) starts from an already distilled student. Stage ``i`` is an ordinary run in
``<output_dir>/stage-<i>``: stage 0 builds its student as the recipe says; stage ``i ≥ 1`` loads stage ``i − 1``'s
exported student (``student.init: pretrained``), so its head and tokenizer carry over. Each stage keeps the recipe's
data, teacher (a fine-tuned teacher is fine-tuned once and found in the artifact store by every stage) and
evaluation; its losses and the training keys it names are its own (:class:`kdkit.config.StageConfig`). Which stages
are reused, resumed or trained again follows :func:`kdkit.engine.sequence.run_in_order`; every stage's recipe is
built and checked before the first one trains.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, Callable

from accelerate import PartialState

from kdkit.config import Recipe, parse_recipe
from kdkit.engine.sequence import run_in_order
from kdkit.errors import ConfigError
from kdkit.report.bootstrap import PER_QUERY
from kdkit.report.report import write_report
from kdkit.report.results import markdown_table, metric_header, metrics_of, primary_of, show_metric


def stage_label(recipe: Recipe, index: int) -> str:
    return recipe.stages[index].name or str(index)


def _named(index: int, recipe: Recipe, action: Callable[[], Any]) -> Any:
    """``action()``, with a :class:`ConfigError` it raises prefixed by the stage it is about."""
    try:
        return action()
    except ConfigError as err:
        raise ConfigError(f"stages[{index}] ('{stage_label(recipe, index)}'): {err}") from None


def stage_recipes(recipe: Recipe, *, as_built: bool = False) -> list[Recipe]:
    """The ordinary recipe of every stage (see the module docstring), each parsed: a problem in any stage is one line
    naming it. ``as_built``: every stage with the student the recipe builds (what stage 0 exports, before it
    exists), for checking each stage's losses against the models before anything trains."""
    out = recipe.resolved_output_dir()
    base = recipe.model_dump(mode="json", exclude={"stages"})
    recipes = []
    for i, stage in enumerate(recipe.stages):
        data = {**base, "name": f"{recipe.name}-{stage_label(recipe, i)}", "output_dir": str(out / f"stage-{i}"),
                "training": recipe.stage_training(i).model_dump(mode="json")}
        if stage.losses is not None:
            data["losses"] = [loss.model_dump(mode="json") for loss in stage.losses]
        adaptive = stage.adaptive if stage.adaptive is not None else recipe.student_adaptive()
        if i and not as_built:
            data["student"] = {"init": "pretrained", "model": str(out / f"stage-{i - 1}" / "student")}
        if adaptive is not None:  # a later stage's student is the earlier stage's, already rewired
            data["student"]["adaptive"] = {**adaptive.model_dump(mode="json"), **({"rewire": False} if i else {})}
        recipes.append(_named(i, recipe, lambda: parse_recipe(data)))
    return recipes


def render_stages(rows: list[dict], primary: str) -> str:
    """The stages table of ``report.md``: each stage's losses, epochs, learning rate and its student's score."""
    header = ["stage", "losses", "epochs", "learning rate", metric_header(primary), "status"]
    body = [[row["stage"], ", ".join(row["losses"]), f"{row['epochs']:g}", f"{row['learning_rate']:g}",
             show_metric(primary, row["metrics"].get(primary)), row["status"]] for row in rows]
    return "\n".join(markdown_table(header, body)) + "\n"


def distill_stages(recipe: Recipe, distill: Callable[..., dict], check: Callable[[Recipe], Any], *,
                   resume: bool = False, overwrite: bool = False) -> dict:
    """Train every stage of ``recipe`` in order; the run's report is the last stage's (its student is the run's),
    with ``stages``: one row per stage (name, folder, status, losses, epochs, learning rate, metrics).

    ``check`` is called on every stage's recipe with the student the recipe builds (the task's model and loss
    checks: layer maps, widths, ...) before anything is written, so a bad later stage fails in seconds, not after
    the earlier stages trained. ``resume`` needs no flag (interrupted stages always resume); it is accepted so
    ``--resume`` works for every recipe."""
    del resume
    for i, part in enumerate(stage_recipes(recipe, as_built=True)):
        _named(i, recipe, lambda: check(part))
    parts = stage_recipes(recipe)
    done = run_in_order(recipe, parts, distill, overwrite=overwrite, what="stage")
    if not PartialState().is_main_process:
        return {}
    rows = [{"stage": stage_label(recipe, i), "dir": str(folder), "status": how,
             "losses": [loss.name for loss in part.losses], "epochs": part.training.epochs,
             "learning_rate": part.training.learning_rate, "metrics": metrics_of(report["student"])}
            for i, (part, (report, how, folder)) in enumerate(zip(parts, done))]
    last = done[-1][0]
    report = {**last, "recipe": recipe.name, "stages": rows}
    seconds = [stage_report.get("train_seconds") for stage_report, _, _ in done]
    report.pop("train_seconds", None)
    if None not in seconds:  # every stage's time is known (a reused stage from before kdkit recorded it is not)
        report["train_seconds"] = round(sum(seconds), 3)
    out = recipe.resolved_output_dir()
    write_report(out, report)
    per_example = done[-1][2] / PER_QUERY  # the last student's per-example scores: compare's paired intervals
    if per_example.is_file():
        shutil.copyfile(per_example, out / PER_QUERY)
    with open(out / "report.md", "a") as md:
        md.write("\n## Stages\n\n" + render_stages(rows, primary_of(report)))
    if report.get("sub_networks"):  # a DynaBERT recipe: the last stage's grid is the run's
        from kdkit.report.sub_networks import append_grid

        append_grid(out, report["sub_networks"], primary_of(report), f"{recipe.name}: sub-networks")
    return json.loads((out / "report.json").read_text())
