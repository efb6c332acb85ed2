"""Born-again self-distillation over generations (Zhang & Sabuncu 2020; Furlanello et al. 2018; SPEC §5).

Each generation is an ordinary distillation run in ``<output_dir>/gen-<g>``; these functions only plan the runs
(:mod:`kdkit.engine.sequence` decides which to train, resume or reuse) and gather the per-generation table. The
run itself is injected (``distill``), so the engine never imports the API layer above it.
"""

from __future__ import annotations

from typing import Callable

from accelerate import PartialState

from kdkit.config import Recipe, parse_recipe
from kdkit.engine.sequence import run_in_order
from kdkit.report.generations import write_report as write_generations_report
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

    Which generations are reused, resumed or trained again follows :func:`kdkit.engine.sequence.run_in_order` (the
    rule of ``kdkit compare``, which may call this with ``overwrite`` for a run that has no top-level report yet,
    so ``overwrite`` never throws away a finished generation of the same recipe). ``resume`` needs no flag here
    (interrupted generations always resume); it is accepted so ``--resume`` works for every recipe.
    """
    del resume  # see the docstring: resuming is decided per generation
    out = recipe.resolved_output_dir()
    state = PartialState()
    done = run_in_order(recipe, generation_recipes(recipe), distill, overwrite=overwrite, what="generation")
    rows, reports = [], []
    for g, (report, how, folder) in enumerate(done):
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
