"""The ``kdkit`` command line: ``distill``, ``compress``, ``pick``, ``cache``, ``compare``, ``eval``, ``export``,
``info`` and ``quickstart``.

Exit codes, each with one line on stderr and no traceback:

- 0: done; a run that trained no step or evaluated to a NaN/infinite metric never ends so (see
  :mod:`kdkit.engine.pipeline`);
- 2: an error the user can fix (a :class:`~kdkit.errors.KdkitError`, a usage error): ``error: ...``;
- 130: Ctrl-C: ``interrupted at step N; resume with --resume`` once training had begun, else ``interrupted``;
- 1: anything else is kdkit's fault: ``internal error: <type>: <message>; details in <file>``, the traceback in
  ``<output_dir>/error.log`` when the run has a folder, else in a temporary file.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Optional

import typer

from kdkit.errors import ConfigError, KdkitError
from kdkit.schema import BATCH_MAX, TOKENS_MAX

try:  # recent typer bundles its own copy of click and raises that copy's exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

_HELP_ERRORS = getattr(click_exceptions, "NoArgsIsHelpError", ())

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdkit: knowledge distillation for language models.")

SET_HELP = "Override a recipe key, e.g. --set training.epochs=1 --set losses.0.weight=0.5 (repeatable)."
FORCE_HELP = ("With --resume: accept a recipe whose logging, saving, evaluation or training-length keys "
              "(training.max_steps, training.epochs) changed; other changes are always refused.")


class _Interrupted(Exception):
    """A Ctrl-C on its way to :func:`main`: typer would reduce the ``KeyboardInterrupt`` (with the step a run had
    reached, :class:`~kdkit.engine.pipeline.RunInterrupted`) to a bare exit code."""


def _command(command):
    """A command whose every argument is checked first (:func:`_check_arguments`) and whose Ctrl-C reaches
    :func:`main` with the step a run had reached."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        _check_arguments(command, kwargs)
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as err:
            raise _Interrupted(str(err) or "interrupted") from err
    return run


def _check_arguments(command, kwargs: dict) -> None:
    """Refuse, for any argument or option of any command, what none can mean: an empty or blank text, a NUL
    character (no path or name holds one), a text longer than a path can be (``--set`` items have the recipe
    file's limit instead), a NaN or infinite number. Ranges of numbers are declared on the options themselves."""
    from kdkit.config import MAX_RECIPE_BYTES
    from kdkit.errors import ConfigError
    from kdkit.schema import STR_MAX, shorten

    for name, value in kwargs.items():
        shown = _flag(command, name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{shown} {item}: give a finite number")
            if not isinstance(item, str):
                continue
            limit = MAX_RECIPE_BYTES if name == "set_" else STR_MAX
            if not item.strip():
                raise ConfigError(f"{shown} {item!r}: give a non-empty value")
            if "\0" in item:
                raise ConfigError(f"{shown} {shorten(item)!r}: a NUL character cannot be part of a name or path")
            if len(item) > limit:
                raise ConfigError(f"{shown} {shorten(item)!r}: longer than {limit} characters")


def _flag(command, name: str) -> str:
    """How the user wrote the parameter ``name``: ``--batch-size`` for an option, ``RECIPE`` for an argument."""
    import inspect

    default = inspect.signature(command).parameters[name].default
    if isinstance(default, typer.models.ArgumentInfo):
        return name.upper()
    decls = getattr(default, "param_decls", None) or ()
    return next((d for d in decls if d.startswith("--")), "--" + name.rstrip("_").replace("_", "-"))


def _print_report(report: dict) -> None:
    from kdkit.report import generations
    from kdkit.report.report import render_markdown

    if report:  # empty on the non-main processes of a multi-process run
        print((generations.render_markdown if "generations" in report else render_markdown)(report))


@app.command()
@_command
def distill(recipe: str = typer.Argument(..., help="A recipe YAML file or a shipped recipe name."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
            force: bool = typer.Option(False, "--force", help=FORCE_HELP),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir.")) -> None:
    """Distil a student as a recipe says, then evaluate it against the teacher and write the report."""
    from kdkit import api

    _print_report(api.distill(recipe, set_, resume=resume, overwrite=overwrite, force=force))


@app.command()
@_command
def cache(recipe: str = typer.Argument(..., help="A recipe YAML file or a shipped recipe name."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          rebuild: bool = typer.Option(False, "--rebuild", help="Build again even if a current cache exists.")) -> None:
    """Run the teacher once over the training data and store what the recipe's losses need."""
    from kdkit import api

    result = api.cache(recipe, set_, rebuild=rebuild)
    print(f"teacher cache: {result['path']}\n  {result['examples']} examples, {result['bytes']} bytes "
          f"({result['bytes_per_example']:.1f} bytes/example), {result['seconds']:.1f} s")


@app.command()
@_command
def quickstart(output_dir: Optional[str] = typer.Option(None, help="Where the run goes (default runs/quickstart)."),
               set_: list[str] = typer.Option([], "--set", help=SET_HELP),
               resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
               force: bool = typer.Option(False, "--force", help=FORCE_HELP),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir.")) -> None:
    """MiniLM-L6 teacher → 3-layer student on Rotten Tomatoes, with the size/speed/quality report."""
    from kdkit import api

    _print_report(api.quickstart(output_dir, set_, resume=resume, overwrite=overwrite, force=force))


@app.command("eval")
@_command
def evaluate(model: str = typer.Argument(..., help="A model folder, named model or hub id (a classifier, a "
                                                   "bi-encoder with --task retrieval, a causal LM with --task "
                                                   "generation)."),
             task: str = typer.Option("classification", help="classification, retrieval or generation."),
             dataset: Optional[str] = typer.Option(None, help="Named or hub dataset (see `kdkit info`); retrieval: "
                                                               "a named set or a BEIR folder."),
             train_file: Optional[str] = typer.Option(None, help="csv/jsonl training file (defines the labels; "
                                                                  "retrieval: jsonl pairs)."),
             test_file: Optional[str] = typer.Option(None, help="csv/jsonl file to evaluate on."),
             text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
             split: str = typer.Option("test", help="validation or test."),
             max_length: int = typer.Option(128, min=1, max=TOKENS_MAX,
                                            help="Tokens a text is cut to (generation: a prompt)."),
             batch_size: int = typer.Option(64, min=1, max=BATCH_MAX),
             similarity: str = typer.Option("dot", help="retrieval: how the bi-encoder scores, dot or cosine."),
             score: str = typer.Option("rouge", help="generation: rouge (of greedy completions) or likelihood "
                                                     "(token accuracy and perplexity of the references)."),
             teacher: Optional[str] = typer.Option(None, help="Also evaluate this teacher and compare (retrieval: "
                                                               "as a MaxSim late-interaction model)."),
             output_dir: Optional[str] = typer.Option(None, help="Write report.md/report.json here (with --teacher, "
                                                                 "or with --task retrieval)."),
             ) -> None:
    """Classification: accuracy, parameters and CPU latency of a classifier. Retrieval: MRR@10, nDCG@10 and recall
    over the whole corpus, index size and per-query latency of a bi-encoder. Generation: ROUGE of greedy completions,
    perplexity and tokens/s of a causal LM. Side by side with a teacher if given."""
    from kdkit import api
    from kdkit.config import parse_recipe
    if task not in ("classification", "retrieval", "generation"):
        raise ConfigError(f"--task {task!r}: kdkit eval evaluates 'classification', 'retrieval' or 'generation' "
                          f"models")
    if similarity not in ("dot", "cosine"):
        raise ConfigError(f"--similarity {similarity!r}: give dot or cosine")
    data = {"dataset": dataset, "train_file": train_file, "test_file": test_file, "max_length": max_length}
    sections = {"evaluation": {"split": split}, "training": {"eval_batch_size": batch_size}}
    if task == "retrieval":
        if (text_column, label_column) != ("text", "label"):
            raise ConfigError("--text-column and --label-column are classification options; retrieval files have "
                              "fixed fields (query, positive, negatives)")
        # one validation path for every entry point: build the same typed sections a recipe would have
        recipe = parse_recipe({"task": "retrieval", "data": data, "student": {"init": "pretrained", "model": model},
                               "losses": [{"name": "contrastive"}], "retrieval": {"similarity": similarity},
                               **({"teacher": {"model": teacher}} if teacher else {}), **sections})
        _print_report(api.evaluate_recipe(recipe, output_dir=output_dir))
        return
    if similarity != "dot":
        raise ConfigError("--similarity is a retrieval option (with --task retrieval)")
    if score != "rouge" and task != "generation":
        raise ConfigError("--score is a generation option (with --task generation)")
    if task == "generation":
        if (text_column, label_column) != ("text", "label"):
            raise ConfigError("--text-column and --label-column are classification options; generation files have "
                              "fixed fields (prompt and completion, or messages)")
        if max_length < 2:
            raise ConfigError(f"--max-length {max_length}: a prompt needs at least 2 tokens")
        data = {"dataset": dataset, "train_file": train_file, "test_file": test_file, "max_prompt_length": max_length,
                "prompt_tail": min(8, max_length - 1)}
        recipe = parse_recipe({"task": "generation", "data": data, "student": {"init": "pretrained", "model": model},
                               "losses": [{"name": "nll"}], **({"teacher": {"model": teacher}} if teacher else {}),
                               "generation": {"score": score}, **sections})
        _print_report(api.evaluate_recipe(recipe, output_dir=output_dir))
        return
    recipe = parse_recipe({
        "data": {**data, "text_column": text_column, "label_column": label_column},
        "teacher": {"model": teacher or model}, "student": {"init": "pretrained", "model": model},
        "losses": [{"name": "ce"}], **sections})
    result = api.evaluate(model, recipe.data, teacher=teacher, evaluation=recipe.evaluation, batch_size=batch_size,
                          output_dir=output_dir)
    if teacher:
        _print_report(result)
    else:
        print(json.dumps(result, indent=2))


@app.command()
@_command
def compress(recipe: str = typer.Argument(..., help="A recipe YAML file or a shipped recipe name (its teacher, task, "
                                                    "data, losses and training)."),
             params: Optional[str] = typer.Option(None, "--params", help="Budget in parameters: a count or a "
                                                                          "percentage of the teacher's (15%)."),
             size: Optional[str] = typer.Option(None, "--bytes", help="Budget in bytes of float32 weights (20MB)."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP),
             resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir.")) -> None:
    """Make a student of the recipe's teacher that fits a size budget (teacher blocks, then a block-wise compressed
    word embedding), distil it as the recipe says and report where it landed."""
    from kdkit import api

    report = api.compress(recipe, set_, params=params, size=size, resume=resume, overwrite=overwrite)
    _print_report(report)
    if report:
        c = report["compress"]
        shown = "whole" if c["embedding_fraction"] is None else f"{c['embedding_fraction']:.1%} of its parameters"
        print(f"compress: budget {c['budget']:,} parameters; student {c['student_parameters']:,} "
              f"({c['share_of_teacher']:.1%} of the teacher's {c['teacher_parameters']:,}): teacher blocks "
              f"{c['layers']}, word embedding {shown}")


@app.command()
@_command
def pick(run: str = typer.Argument(..., help="The folder of a finished run trained with student.adaptive."),
         params: Optional[str] = typer.Option(None, "--params", help="Most parameters: a count or a percentage of "
                                                                      "the teacher's (15%)."),
         size: Optional[str] = typer.Option(None, "--bytes", help="Most bytes of float32 weights (20MB)."),
         latency_ms: Optional[float] = typer.Option(None, "--latency-ms", min=0.0, max=1e9,
                                                    help="Most median latency in milliseconds (as the run measured)."),
         batch_size: int = typer.Option(1, "--batch-size", min=1, max=BATCH_MAX,
                                        help="The batch size --latency-ms is read at.")
         ) -> None:
    """Pick the DynaBERT sub-network of a run that scores best on validation within a size and/or latency budget;
    print its folder and numbers."""
    from kdkit import api
    from kdkit.report.results import show_metric

    chosen = api.pick(run, params=params, size=size, latency_ms=latency_ms, batch_size=batch_size)
    metrics = ", ".join(f"{name} {show_metric(name, value)}" for name, value in chosen["metrics"].items())
    validation = ", ".join(f"{name} {show_metric(name, value)}" for name, value in chosen["validation"].items())
    latency = ", ".join(f"b{b} {1e3 * v['median_s']:.2f} ms" for b, v in chosen["latency"].items())
    print(f"width {chosen['width']:g} × depth {chosen['depth']:g}: {chosen['params']:,} parameters, "
          f"{chosen['heads']} heads, {chosen['neurons']} FFN neurons, {len(chosen['layers'])} layers")
    print(f"validation: {validation}; evaluation: {metrics}; latency {latency}")
    print(chosen["dir"])


@app.command()
@_command
def export(model: str = typer.Argument(..., help="A saved student folder (a classifier or a causal LM, its embedding "
                                                 "compressed or not), named model or hub id."),
           onnx: str = typer.Option(..., "--onnx", help="Folder to write model.onnx, the tokenizer and "
                                                         "onnx_report.json to."),
           length: int = typer.Option(64, min=1, max=TOKENS_MAX, help="Tokens per sequence when timing."),
           repeats: int = typer.Option(10, min=1, max=10_000, help="Timed runs per batch size (medians)."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --onnx folder.")) -> None:
    """Export a student to ONNX, check onnxruntime's logits against PyTorch's, and time both on this CPU."""
    from kdkit.export import export_onnx

    report = export_onnx(model, onnx, length=length, repeats=repeats, overwrite=overwrite)
    print(f"wrote {Path(onnx) / 'model.onnx'} ({report['onnx_bytes'] / 1e6:.1f} MB); max |logit difference| vs "
          f"PyTorch {report['parity_max_abs_difference']:.2e}")
    for batch, row in report["latency_ms"].items():
        print(f"batch {batch}, {length} tokens: PyTorch {row['pytorch_ms']:.1f} ms, onnxruntime "
              f"{row['onnxruntime_ms']:.1f} ms ({row['speedup']:.2f}x)")


@app.command()
@_command
def compare(sources: list[str] = typer.Argument(..., help="One comparison YAML (with 'runs' or 'grid'), or "
                                                           "several recipes (files or shipped names), one run each."),
            seeds: list[str] = typer.Option([], "--seeds", help="Seeds: --seeds 0 1 2 or --seeds 0,1,2 "
                                                                 "(default: the comparison's, else 0)."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Applies to every run."),
            output_dir: Optional[str] = typer.Option(None, help="Where runs and leaderboard go "
                                                                "(default runs/compare-NAME)."),
            name: Optional[str] = typer.Option(None, help="The comparison's name (title, default folder)."),
            alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                  help="α of the distillation metric, 0..1 (default 0.5)."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Redo runs whose folder holds a different "
                                                                      "recipe."),
            document: Optional[str] = typer.Option(None, help="With several comparison files: also write one "
                                                              "markdown document of all their leaderboards here."),
            preamble: Optional[str] = typer.Option(None, help="With --document: a markdown file whose text "
                                                              "opens the document."),
            finished_only: bool = typer.Option(False, "--finished-only",
                                               help="Train nothing: the tables of the runs finished so far, naming "
                                                    "the rest (to look at a comparison another process runs).")
            ) -> None:
    """Run recipes × seeds (finished runs are reused) and write leaderboard.md/.html/.json and pareto.png."""
    from kdkit import api
    from kdkit.config import resolve_recipe_path
    from kdkit.errors import ConfigError
    from kdkit.report.leaderboard import is_comparison_file
    from kdkit.schema import SEED_MAX, shorten

    # click options take one value each, so the numbers after `--seeds 0` arrive as positional arguments
    if seeds:
        seeds += [s for s in sources if s.isdigit() and not Path(s).exists()]
        sources = [s for s in sources if not (s.isdigit() and not Path(s).exists())]
    try:
        seed_list = [int(part) for item in seeds for part in item.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds {shorten(' '.join(seeds))}: seeds are integers, e.g. --seeds 0 1 2"
                                 ) from None
    bad_seed = next((seed for seed in seed_list if not 0 <= seed <= SEED_MAX), None)
    if bad_seed is not None:
        raise ConfigError(f"compare --seeds {shorten(bad_seed)}: a seed is an integer in 0..{SEED_MAX}")
    if finished_only and overwrite:
        raise ConfigError("compare: --finished-only trains nothing, so --overwrite has nothing to redo; give one")
    if document is not None:
        not_comparisons = [item for item in sources if not is_comparison_file(item)]
        if not_comparisons:
            raise ConfigError(f"compare --document: '{not_comparisons[0]}' is not a comparison file (one with "
                              f"'runs' or 'grid'); --document gathers comparison files")
        if preamble is not None and not Path(preamble).is_file():
            raise ConfigError(f"compare --preamble: '{preamble}' is not a file")
        text = Path(preamble).read_text(encoding="utf-8") if preamble else ""
        path = api.compare_document(sources, document, set_, preamble=text, overwrite=overwrite,
                                    seeds=seed_list or None, finished_only=finished_only)
        print(f"written: {path}")
        return
    if len(sources) == 1 and is_comparison_file(sources[0]):
        source = sources[0]
    else:
        for item in sources:
            if is_comparison_file(item):
                raise ConfigError(f"compare: '{item}' is a comparison file; give it alone, not with recipes")
            try:
                resolve_recipe_path(item)
            except ConfigError as err:  # the argument is SOURCES here: say so, not just "recipe"
                raise ConfigError(f"compare SOURCES: {err}") from None
        source = sources
    from kdkit.engine.pipeline import RunInterrupted

    try:
        board = api.compare(source, seed_list or None, set_, output_dir=output_dir, name=name, alpha=alpha,
                            overwrite=overwrite, finished_only=finished_only)
    except RunInterrupted as err:  # compare has no --resume: running it again resumes interrupted runs
        err.hint = "run the same `kdkit compare` again to resume"
        raise
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
        losses = (f"losses: {', '.join(terms.loss_names(name))}" if "losses" in task.recipe.model_fields
                  else "its own loop, no loss terms")
        print(f"  {name:20s} primary metric {task.primary_metric}; {losses}")
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
    from kdkit.tasks.dataset_distillation.data import NAMED as IMAGE_SETS
    from kdkit.tasks.generation.data import NAMED as GENERATION_SETS
    from kdkit.tasks.multimodal.data import NAMED as MULTIMODAL_SETS
    from kdkit.tasks.retrieval.data import NAMED as RETRIEVAL_SETS

    print("Task datasets (data.dataset of that task; dataset_distillation also reads rotten_tomatoes, bbc_news):")
    for task_name, sets in (("retrieval", RETRIEVAL_SETS), ("generation", GENERATION_SETS),
                            ("dataset_distillation", IMAGE_SETS), ("multimodal", MULTIMODAL_SETS)):
        for name, build in sets.items():
            summary = (build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else ""
            print(f"  {name:16s} {task_name}: {summary}")
    print("Recipes:     " + ", ".join(shipped_recipes()))


def _error_log(err: BaseException, argv: list[str]) -> Path:
    """Write the traceback of an internal error to the run's ``error.log`` (``kdkit_run_dir``, set by the
    pipeline), else to a temporary file; return where."""
    text = f"kdkit {' '.join(argv)}\n\n" + "".join(traceback.format_exception(err))
    run = getattr(err, "kdkit_run_dir", None)
    if run is not None:
        try:
            (Path(run) / "error.log").write_text(text, encoding="utf-8")
            return Path(run) / "error.log"
        except OSError:
            pass
    fd, path = tempfile.mkstemp(prefix="kdkit-error-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, standalone_mode=False)
    except KdkitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (_Interrupted, KeyboardInterrupt) as err:
        print(str(err) or "interrupted", file=sys.stderr)
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
    except Exception as err:  # kdkit's fault, not the user's: one line here, the traceback in a file
        log = _error_log(err, sys.argv[1:] if argv is None else argv)
        message = (str(err).strip().splitlines() or [""])[0]
        message = message if len(message) <= 200 else message[:197] + "..."
        print(f"internal error: {type(err).__name__}: {message}; details in {log}", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # typer's exit code for a Ctrl-C outside a command (while parsing the arguments)
        print("interrupted", file=sys.stderr)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
