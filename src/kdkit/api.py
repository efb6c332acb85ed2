"""The Python API: what ``kdkit distill``, ``cache``, ``eval``, ``compare`` and ``quickstart`` do, callable from code.

A thin dispatch: the recipe names its task (``task:``, default ``classification``), the task runs it. Every check
that can be made before anything is written (recipe, data, models, vocabularies, layer maps) runs first; the
pipeline itself is :mod:`kdkit.engine.pipeline`, the tasks are in :mod:`kdkit.tasks`.
"""

from __future__ import annotations

from pathlib import Path

from kdkit.config import Recipe, load_recipe
from kdkit.engine import generations, stages
from kdkit.engine.pipeline import build_teacher_cache
from kdkit.errors import ConfigError
from kdkit.tasks import get_task


def _recipe(recipe: Recipe | str | Path | dict, overrides: list[str] | None) -> Recipe:
    """A parsed recipe as it is (any task's recipe class), else the file, shipped name or mapping parsed."""
    return load_recipe(recipe, overrides) if isinstance(recipe, (str, Path, dict)) else recipe


def distill(recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, *, resume: bool = False,
            overwrite: bool = False, force: bool = False) -> dict:
    """Run a recipe end to end and return the report as a dict (also written to ``output_dir``).

    ``resume`` continues the run in ``output_dir`` with the recipe it started with; ``force`` also accepts changes
    to the keys that are safe to change on resume (:data:`kdkit.engine.pipeline.RESUME_SAFE_KEYS`)."""
    if force and not resume:
        raise ConfigError("--force goes with --resume: it accepts a resume whose recipe changed logging, saving, "
                          "evaluation or training-length keys")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in output_dir and --overwrite replaces it; give one of them")
    recipe = _recipe(recipe, overrides)
    if recipe.generations is not None:
        return generations.distill_generations(recipe, distill, resume=resume, overwrite=overwrite)
    if getattr(recipe, "stages", None) is not None:  # the recipes of tasks with their own loop have no stages
        task = get_task(recipe.task)
        data = task.load_data(recipe)  # every stage reads the same data section: loaded once for the checks
        return stages.distill_stages(recipe, distill, lambda part: task.prepare(part, data=data), resume=resume,
                                     overwrite=overwrite)
    return get_task(recipe.task).run(recipe, resume=resume, overwrite=overwrite, force=force)


def compress(recipe: str | Path | dict, overrides: list[str] | None = None, *, params: str | None = None,
             size: str | None = None, resume: bool = False, overwrite: bool = False) -> dict:
    """``kdkit compress``: a student of the recipe's teacher that fits a budget (``params``: a count or ``15%`` of
    the teacher's; ``size``: bytes such as ``20MB``), chosen by :func:`kdkit.students.budget.plan_student` (teacher
    blocks, then the share of the word embedding the block-wise factors get), distilled with the recipe's losses
    and training; the report gains ``compress`` (budget, plan, where the student landed)."""
    import json

    from kdkit.students.budget import parse_budget, plan_student

    base = _recipe(recipe, overrides)
    task = get_task(base.task)
    if base.teacher is None or not hasattr(task, "load_teacher"):
        raise ConfigError(f"kdkit compress makes a student of a teacher: the recipe needs a 'teacher' section and a "
                          f"task that trains with one (task '{base.task}')")
    teacher, _ = task.load_teacher(base, task.load_data(base), base.teacher.model)
    budget = parse_budget(params, size, sum(p.numel() for p in teacher.parameters()))
    plan = plan_student(teacher, budget)
    del teacher
    student = {"init": "teacher_layers", "layers": plan.layers}
    if plan.embedding_fraction is not None:
        chosen = base.student.embedding
        keep = chosen.model_dump(exclude={"fraction", "parameters"}) if chosen is not None else {}
        student["embedding"] = {**keep, "fraction": plan.embedding_fraction}
    final = _recipe(recipe, [*(overrides or []), f"student={json.dumps(student)}"])
    report = distill(final, resume=resume, overwrite=overwrite)
    if report:  # empty on the non-main processes
        landed = report["student"]["params"]
        report["compress"] = {**plan.as_dict(), "student_parameters": landed,
                              "share_of_teacher": landed / plan.teacher_parameters, "within_budget": landed <= budget}
        (final.resolved_output_dir() / "compress.json").write_text(json.dumps(report["compress"], indent=1))
    return report


def pick(run_dir: str | Path, *, params: str | None = None, size: str | None = None, latency_ms: float | None = None,
         batch_size: int = 1) -> dict:
    """``kdkit pick``: of a DynaBERT run's sub-networks (``student.adaptive``; its ``report.json``), the one with
    the best validation score within the budget: ``params`` (a count or a percentage of the teacher's), ``size``
    (bytes of float32 weights, ``20MB``) and/or ``latency_ms`` (median latency at ``batch_size``, as the run
    measured it). Returns its report entry (``dir`` is its folder); a one-line error when none fits."""
    import json

    from kdkit.report.sub_networks import pick as pick_entry
    from kdkit.students.budget import parse_budget

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no report.json here; give the folder of a finished run")
    report = json.loads(path.read_text())
    entries = report.get("sub_networks")
    if not entries:
        raise ConfigError(f"{run_dir}: the run has no sub-networks; pick reads runs made with student.adaptive")
    if params is None and size is None and latency_ms is None:
        raise ConfigError("give a budget: --params (e.g. 15% or 5000000), --bytes (e.g. 20MB) and/or --latency-ms")
    reference = (report.get("teacher") or entries[0])["params"]
    max_params = parse_budget(params, size, reference) if params is not None or size is not None else None
    sizes = sorted(entries[0]["latency"], key=int)
    if latency_ms is not None and str(batch_size) not in entries[0]["latency"]:
        raise ConfigError(f"--batch-size {batch_size}: the run measured latency at batch sizes {', '.join(sizes)}")
    chosen = pick_entry(entries, report.get("primary_metric", "accuracy"), max_params=max_params,
                        max_latency_ms=latency_ms, batch_size=str(batch_size))
    if chosen is None:
        smallest = min(entries, key=lambda e: e["params"])
        raise ConfigError(f"no sub-network fits the budget; the smallest has {smallest['params']:,} parameters and "
                          f"{1e3 * smallest['latency'][sizes[0]]['median_s']:.2f} ms at batch {sizes[0]}")
    return chosen


def cache(recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, *, rebuild: bool = False) -> dict:
    """Build (or check) the teacher cache of a recipe: ``kdkit cache RECIPE``."""
    recipe = _recipe(recipe, overrides)
    task = get_task(recipe.task)
    if not hasattr(task, "prepare_all"):
        raise ConfigError(f"task '{recipe.task}' trains without a teacher cache")
    return build_teacher_cache(task, recipe, rebuild=rebuild)


def evaluate(model: str, data, *, teacher: str | None = None, evaluation=None, batch_size: int = 64,
             output_dir: str | Path | None = None) -> dict:
    """Evaluate a saved classifier (and optionally a teacher beside it) on a dataset split (``kdkit eval``)."""
    from kdkit.tasks.classification import evaluate as evaluate_classification

    return evaluate_classification(model, data, teacher=teacher, evaluation=evaluation, batch_size=batch_size,
                                   output_dir=output_dir)


def evaluate_recipe(recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, *,
                    output_dir: str | Path | None = None) -> dict:
    """Evaluate the recipe's student model as it is (``student.init: pretrained``; no training), beside its teacher
    if it has one, with the task's own evaluation (``kdkit eval --task retrieval``); writes the report to
    ``output_dir`` when given."""
    recipe = _recipe(recipe, overrides)
    task = get_task(recipe.task)
    if not hasattr(task, "evaluate_model"):  # a task with a loop of its own
        raise ConfigError(f"task '{recipe.task}' has no evaluation of a saved model")
    return task.evaluate_model(recipe, output_dir=output_dir)


def quickstart(output_dir: str | Path | None = None, overrides: list[str] | None = None, *, resume: bool = False,
               overwrite: bool = False, force: bool = False) -> dict:
    """The shipped quickstart recipe: MiniLM-L6 teacher → 3-layer student on Rotten Tomatoes."""
    extra = [f"output_dir={output_dir}"] if output_dir else []
    return distill("quickstart", extra + (overrides or []), resume=resume, overwrite=overwrite, force=force)


def compare(source: str | Path | dict | list, seeds: list[int] | None = None, overrides: list[str] | None = None,
            *, output_dir: str | Path | None = None, name: str | None = None, alpha: float | None = None,
            overwrite: bool = False, finished_only: bool = False) -> dict:
    """``kdkit compare``: every run × seed of a comparison, then the leaderboard (see :mod:`kdkit.report.leaderboard`).

    ``source`` is a comparison file or mapping (``runs``/``grid``), or a list of recipes (files, shipped names or
    mappings), one run each. ``seeds``, ``output_dir``, ``name`` and ``alpha`` replace the comparison's own;
    ``overrides`` (``key=value``) apply to every run after its own ``set``. Finished runs are reused;
    ``finished_only`` trains nothing and tabulates just those (the board's ``left_out`` names the rest).
    """
    from kdkit.report import leaderboard as comparing

    fields = {"output_dir": str(output_dir) if output_dir is not None else None, "name": name, "alpha": alpha}
    if isinstance(source, list):
        comparison = comparing.comparison_from_recipes(source, seeds, **fields)
    else:
        comparison = comparing.load_comparison(source)
        updates = {k: v for k, v in {**fields, "seeds": seeds}.items() if v is not None}
        if updates:
            comparison = comparing.parse_comparison({**comparison.model_dump(), **updates})
    return _with_task_extras(comparing.compare(comparison, distill, overrides=overrides, overwrite=overwrite,
                                               finished_only=finished_only), comparison.resolved_output_dir())


def _with_task_extras(board: dict, out: Path) -> dict:
    """``board`` with ``figures`` and ``tables``: the pictures (written into the comparison's folder) and tables its
    runs' task adds (:meth:`kdkit.engine.pipeline.Task.compare_figures`, :meth:`~kdkit.engine.pipeline.Task.
    compare_tables`)."""
    import json

    from kdkit.tasks import TASKS

    folders = [d for row in board["rows"] if row["role"] == "student" for d in row.get("dirs", [])]
    task = json.loads((Path(folders[0]) / "report.json").read_text()).get("task") if folders else None
    figures = TASKS[task].compare_figures(board, Path(out)) if task in TASKS else []
    tables = TASKS[task].compare_tables(board) if task in TASKS else []
    if tables and board.get("files", {}).get("md"):  # the comparison's own leaderboard.md shows them too
        with open(board["files"]["md"], "a") as md:
            md.writelines(f"\n{caption}:\n\n{table.rstrip()}\n" for caption, table in tables)
    return {**board, "figures": [{"caption": caption, "path": str(path)} for caption, path in figures],
            "tables": [{"caption": caption, "markdown": table} for caption, table in tables]}


def compare_document(sources: list[str | Path], document: str | Path, overrides: list[str] | None = None, *,
                     title: str = "Results", preamble: str = "", overwrite: bool = False,
                     seeds: list[int] | None = None, finished_only: bool = False) -> Path:
    """``kdkit compare A.yaml B.yaml --document docs/results.md``: run (or reuse) every comparison file in turn,
    then write one markdown document with a section per comparison (see
    :func:`kdkit.report.leaderboard.render_document`). ``seeds`` replace every file's own. Every file is validated
    before the first run trains. ``finished_only``: train nothing; each section shows its finished runs and names
    the rest."""
    from kdkit.report import leaderboard as comparing

    comparisons = [comparing.load_comparison(source) for source in sources]
    if seeds:
        comparisons = [comparing.parse_comparison({**c.model_dump(), "seeds": seeds}) for c in comparisons]
    sections, not_run, last = [], [], None
    for comparison in comparisons:
        try:
            board = comparing.compare(comparison, distill, overrides=overrides, overwrite=overwrite,
                                      finished_only=finished_only)
        except comparing.NothingFinished as err:
            if len(comparisons) == 1:
                raise
            not_run.append(comparison.name)
            last = err
            continue
        sections.append((comparison, _with_task_extras(board, comparison.resolved_output_dir())))
    if not sections:
        raise comparing.NothingFinished(f"compare --finished-only: no run of any of the {len(comparisons)} "
                                        f"comparisons has finished yet ({', '.join(not_run)})") from last
    return comparing.render_document(sections, Path(document), title=title, preamble=preamble, not_run=not_run)
