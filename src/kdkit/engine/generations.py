"""Born-again self-distillation over generations (Zhang & Sabuncu 2020; Furlanello et al. 2018; SPEC §5).

Each generation is an ordinary distillation run in ``<output_dir>/gen-<g>``; these functions only plan the runs,
decide which to train, resume or reuse (the rule of ``kdkit compare``), and gather the per-generation table. The
run itself is injected (``distill``), so the engine never imports the API layer above it.
"""

from __future__ import annotations

import json
from typing import Callable

from accelerate import PartialState

from kdkit.config import Recipe, parse_recipe, recipe_to_yaml
from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.errors import ConfigError
from kdkit.report.generations import write_report as write_generations_report
from kdkit.report.leaderboard import run_state
from kdkit.report.results import metrics_of, primary_of


def generation_recipes(recipe: Recipe) -> list[Recipe]:
    """The ordinary recipe of every generation of a recipe with ``generations``.

    Generation 0 is the recipe itself (its losses and teacher, if any). Generation g ≥ 1 keeps the data, student,
    training and evaluation settings (so its fresh student is built and seeded exactly like generation 0's),
    takes generation g − 1's exported student as its teacher, and trains on (1 − α)·CE + α·soft-CE with the
    temperature on the teacher only and no T² factor. Its teacher cache follows the recipe's ``teacher.cache``
    when that is ``off``, else ``auto``: one directory could not hold the signals of several teachers, and the
    automatic cache is keyed by the teacher's weights, so each generation gets its own.
    """
    gens = recipe.generations
    out = recipe.resolved_output_dir()
    base = recipe.model_dump(mode="json", exclude={"generations"})
    teacher = recipe.teacher
    recipes = []
    for g in range(gens.count):
        data = {**base, "name": f"{recipe.name}-gen{g}", "output_dir": str(out / f"gen-{g}")}
        if g:
            data["teacher"] = {"model": str(out / f"gen-{g - 1}" / "student"),
                               "cache": "off" if teacher is not None and teacher.cache == "off" else "auto",
                               **({"cache_top_k": teacher.cache_top_k, "cache_dense_max": teacher.cache_dense_max}
                                  if teacher is not None else {})}
            data["losses"] = [{"name": "ce", "weight": 1 - gens.alpha},
                              {"name": "soft_ce", "weight": gens.alpha, "temperature": gens.temperature,
                               "temperature_on": "teacher", "t2_scaling": False}]
        recipes.append(parse_recipe(data))
    return recipes


def distill_generations(recipe: Recipe, distill: Callable[..., dict], *, resume: bool = False,
                        overwrite: bool = False) -> dict:
    """Train every generation of a born-again recipe, then write the generations table to ``output_dir``.

    A generation folder made by the same recipe with a ``report.json`` is reused, one without (interrupted) is
    resumed from its last complete checkpoint (or redone), one made by another recipe is refused unless
    ``overwrite`` (then redone): the rule of ``kdkit compare``, which may call this with ``overwrite`` for a run
    that has no top-level report yet, so ``overwrite`` never throws away a finished generation of the same recipe.
    Once a generation is trained, every later one is trained again too: its teacher changed. ``resume`` needs no
    flag here (interrupted generations always resume); it is accepted so ``--resume`` works for every recipe.
    """
    del resume  # see the docstring: resuming is decided per generation
    out = recipe.resolved_output_dir()
    state = PartialState()
    plan = []
    for gen_recipe in generation_recipes(recipe):
        folder = gen_recipe.resolved_output_dir()
        status = run_state(folder, recipe_to_yaml(gen_recipe))
        if status.startswith("stale") and not overwrite:
            raise ConfigError(f"generations: '{folder}' was made by a different recipe "
                              f"({status.removeprefix('stale: ')}); delete it or pass --overwrite to redo it")
        plan.append((gen_recipe, folder, status))
    if state.is_main_process:  # written first, so an interrupted run is recognised as this recipe's (kdkit compare)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    rows, reports, retrained = [], [], False
    for g, (gen_recipe, folder, status) in enumerate(plan):
        if status == "finished" and not retrained:
            report, how = json.loads((folder / "report.json").read_text()), "reused"
        else:
            resume_it = status == "interrupted" and not retrained and \
                last_complete_checkpoint(folder / "checkpoints") is not None
            how = "resumed" if resume_it else "trained"
            print(f"[kdkit] generation {g}: {'resuming' if resume_it else 'training'} in {folder}")
            report = distill(gen_recipe, resume=resume_it, overwrite=not resume_it and status != "new")
            retrained = True
        if not report:  # a non-main process of a multi-process run: the main one reports
            continue
        student, primary = report["student"], primary_of(report)
        score = metrics_of(student)[primary]
        rows.append({"generation": g, "status": how, "dir": str(folder), "teacher_source": report.get("teacher_source"),
                     "params": student["params"], "metrics": metrics_of(student),
                     "gain": score - (rows[0]["metrics"][primary] if rows else score),
                     "latency": student.get("latency", {})})
        reports.append(report)
    if not state.is_main_process:
        return {}
    first, last = reports[0], reports[-1]
    results = {"recipe": recipe.name, "task": last.get("task"), "primary_metric": primary_of(last),
               "split": last.get("split"), "dm_alpha": last.get("dm_alpha"),
               "alpha": recipe.generations.alpha, "temperature": recipe.generations.temperature,
               "generations": rows,
               "student": {**last["student"], "name": f"generation {len(rows) - 1}: {last['student']['name']}"},
               **({"teacher": first["teacher"]} if recipe.teacher is not None else {}),
               "teacher_source": first.get("teacher_source"), "student_dir": last.get("student_dir"),
               "torch_threads": last.get("torch_threads")}
    write_generations_report(out, results)
    return results
