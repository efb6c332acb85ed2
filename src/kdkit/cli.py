"""The ``kdkit`` command line: ``distill``, ``cache``, ``compare``, ``eval``, ``info`` and ``quickstart``.

Any error a user can fix (a :class:`~kdkit.errors.KdkitError`) is printed as one line on stderr and the command
exits with code 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from kdkit.errors import KdkitError

try:  # recent typer bundles its own copy of click and raises that copy's exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

_HELP_ERRORS = getattr(click_exceptions, "NoArgsIsHelpError", ())

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdkit: knowledge distillation for language models.")

SET_HELP = "Override a recipe key, e.g. --set training.epochs=1 --set losses.0.weight=0.5 (repeatable)."


def _print_report(report: dict) -> None:
    from kdkit.report import generations
    from kdkit.report.report import render_markdown

    if report:  # empty on the non-main processes of a multi-process run
        print((generations.render_markdown if "generations" in report else render_markdown)(report))


@app.command()
def distill(recipe: str = typer.Argument(..., help="A recipe YAML file or a shipped recipe name."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir.")) -> None:
    """Distil a student as a recipe says, then evaluate it against the teacher and write the report."""
    from kdkit import api

    _print_report(api.distill(recipe, set_, resume=resume, overwrite=overwrite))


@app.command()
def cache(recipe: str = typer.Argument(..., help="A recipe YAML file or a shipped recipe name."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          rebuild: bool = typer.Option(False, "--rebuild", help="Build again even if a current cache exists.")) -> None:
    """Run the teacher once over the training data and store what the recipe's losses need."""
    from kdkit import api

    result = api.cache(recipe, set_, rebuild=rebuild)
    print(f"teacher cache: {result['path']}\n  {result['examples']} examples, {result['bytes']} bytes "
          f"({result['bytes_per_example']:.1f} bytes/example), {result['seconds']:.1f} s")


@app.command()
def quickstart(output_dir: Optional[str] = typer.Option(None, help="Where the run goes (default runs/quickstart)."),
               set_: list[str] = typer.Option([], "--set", help=SET_HELP),
               resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir.")) -> None:
    """MiniLM-L6 teacher → 3-layer student on Rotten Tomatoes, with the size/speed/quality report."""
    from kdkit import api

    _print_report(api.quickstart(output_dir, set_, resume=resume, overwrite=overwrite))


@app.command("eval")
def evaluate(model: str = typer.Argument(..., help="A model folder, named model or hub id (a classifier)."),
             dataset: Optional[str] = typer.Option(None, help="Named or hub dataset (see `kdkit info`)."),
             train_file: Optional[str] = typer.Option(None, help="csv/jsonl training file (defines the labels)."),
             test_file: Optional[str] = typer.Option(None, help="csv/jsonl file to evaluate on."),
             text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
             split: str = typer.Option("test", help="validation or test."),
             max_length: int = typer.Option(128), batch_size: int = typer.Option(64),
             teacher: Optional[str] = typer.Option(None, help="Also evaluate this teacher and compare."),
             output_dir: Optional[str] = typer.Option(None, help="Write report.md/report.json here (with --teacher)."),
             ) -> None:
    """Accuracy, parameters and CPU latency of a classifier (side by side with a teacher if given)."""
    from kdkit import api
    from kdkit.config import parse_recipe

    # one validation path for every entry point: build the same typed sections a recipe would have
    recipe = parse_recipe({
        "data": {"dataset": dataset, "train_file": train_file, "test_file": test_file,
                 "text_column": text_column, "label_column": label_column, "max_length": max_length},
        "teacher": {"model": teacher or model}, "student": {"init": "pretrained", "model": model},
        "losses": [{"name": "ce"}], "evaluation": {"split": split}})
    result = api.evaluate(model, recipe.data, teacher=teacher, evaluation=recipe.evaluation, batch_size=batch_size,
                          output_dir=output_dir)
    if teacher:
        _print_report(result)
    else:
        print(json.dumps(result, indent=2))


@app.command()
def compare(sources: list[str] = typer.Argument(..., help="One comparison YAML (with 'runs' or 'grid'), or "
                                                           "several recipes (files or shipped names), one run each."),
            seeds: list[str] = typer.Option([], "--seeds", help="Seeds: --seeds 0 1 2 or --seeds 0,1,2 "
                                                                 "(default: the comparison's, else 0)."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Applies to every run."),
            output_dir: Optional[str] = typer.Option(None, help="Where runs and leaderboard go "
                                                                "(default runs/compare-NAME)."),
            name: Optional[str] = typer.Option(None, help="The comparison's name (title, default folder)."),
            alpha: Optional[float] = typer.Option(None, help="α of the distillation metric (default 0.5)."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Redo runs whose folder holds a different "
                                                                      "recipe."),
            document: Optional[str] = typer.Option(None, help="With several comparison files: also write one "
                                                              "markdown document of all their leaderboards here."),
            preamble: Optional[str] = typer.Option(None, help="With --document: a markdown file whose text "
                                                              "opens the document.")) -> None:
    """Run recipes × seeds (finished runs are reused) and write leaderboard.md/.html/.json and pareto.png."""
    from kdkit import api
    from kdkit.errors import ConfigError
    from kdkit.report.leaderboard import is_comparison_file

    # click options take one value each, so the numbers after `--seeds 0` arrive as positional arguments
    if seeds:
        seeds += [s for s in sources if s.isdigit() and not Path(s).exists()]
        sources = [s for s in sources if not (s.isdigit() and not Path(s).exists())]
    try:
        seed_list = [int(part) for item in seeds for part in item.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds {' '.join(seeds)}: seeds are integers, e.g. --seeds 0 1 2") from None
    if document is not None:
        not_comparisons = [item for item in sources if not is_comparison_file(item)]
        if not_comparisons:
            raise ConfigError(f"compare --document: '{not_comparisons[0]}' is not a comparison file (one with "
                              f"'runs' or 'grid'); --document gathers comparison files")
        if preamble is not None and not Path(preamble).is_file():
            raise ConfigError(f"compare --preamble: '{preamble}' is not a file")
        text = Path(preamble).read_text(encoding="utf-8") if preamble else ""
        path = api.compare_document(sources, document, set_, preamble=text, overwrite=overwrite)
        print(f"written: {path}")
        return
    if len(sources) == 1 and is_comparison_file(sources[0]):
        source = sources[0]
    else:
        for item in sources:
            if is_comparison_file(item):
                raise ConfigError(f"compare: '{item}' is a comparison file; give it alone, not with recipes")
        source = sources
    board = api.compare(source, seed_list or None, set_, output_dir=output_dir, name=name, alpha=alpha,
                        overwrite=overwrite)
    print(Path(board["files"]["md"]).read_text())
    print("written: " + ", ".join(board["files"].values()))


@app.command()
def info() -> None:
    """What is available: tasks, loss families, student builders, named models and datasets, shipped recipes."""
    import sys as _sys

    from kdkit import students, terms
    from kdkit.assets import DATASETS, MODELS
    from kdkit.config import shipped_recipes
    from kdkit.tasks import TASKS

    print("Tasks (recipe key 'task'):")
    for name, task in TASKS.items():
        print(f"  {name:16s} primary metric {task.primary_metric}; losses: {', '.join(terms.loss_names(name))}")
    print("Loss families (kdkit.terms; * = teacher-free):")
    families: dict[str, list[str]] = {}
    for name, cls in terms.TERMS.items():
        families.setdefault(cls.__module__, []).append(name + ("*" if not cls.reads_teacher else ""))
    for module, names in families.items():
        doc = ((_sys.modules[module].__doc__ or "").strip().splitlines() or [""])[0]
        print(f"  {module.rsplit('.', 1)[-1]:16s} {', '.join(names)}: {doc}")
    print("Student builders (student.init): " + ", ".join(students.BUILDERS))
    print("Layer maps:  " + ", ".join(terms.LayerMapKind.__args__))
    print("Named models (offline assets; hub ids and local folders work too):")
    for name, asset in MODELS.items():
        print(f"  {name:16s} {asset.description}")
    print("Named datasets:")
    for name, asset in DATASETS.items():
        print(f"  {name:16s} {asset.description}")
    print("Recipes:     " + ", ".join(shipped_recipes()))


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except KdkitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click_exceptions.ClickException as err:
        if isinstance(err, _HELP_ERRORS):  # `kdkit` alone prints the help
            err.show()
        else:  # a usage error (missing argument, unknown option) is one line like every other user error
            hint = f" (see `{err.ctx.command_path} --help`)" if getattr(err, "ctx", None) else ""
            print(f"error: {err.format_message()}{hint}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
