"""``kdkit compare``: several recipes (or a grid over one recipe's keys) × several seeds → one leaderboard.

(Named leaderboard.py, not compare.py: ``kdkit.report.compare`` is already the teacher/student comparison function
re-exported by the package, and a submodule of that name would replace it.)

A *comparison* names runs; each run is a recipe plus ``--set`` overrides. Every (run, seed) is an ordinary
distillation into ``<output_dir>/<run>/seed-<s>`` with ``training.seed=<s>``; ``data.seed`` is left alone so every
run and seed trains and is scored on the same splits. The leaderboard then aggregates the per-run ``report.json``
files on the runs' one primary metric (accuracy, MRR@10, ROUGE-L, ...; see :mod:`kdkit.report.results`): the
student's mean ± sample standard deviation (n − 1; blank for one seed), the teacher's score, the means of the other
metrics, student parameters, median latency over seeds, median speedup over seeds (each seed's speedup is a ratio
of two timings taken in the same process, so it is steadier than a ratio of medians), and the distillation metric
(Alkhulaifi et al., 2021) at the comparison's α from the mean scores. A teacher-free run (label smoothing, Beta
smoothing, ...) has no teacher row and blank teacher columns; a born-again run (a recipe with ``generations``) gives
one row per generation (:func:`expand_generations`). Files: ``leaderboard.md``, ``leaderboard.html``,
``leaderboard.json`` and ``pareto.png`` (see :func:`pareto_figure`).

What happens to a run folder that already exists, decided by comparing its stored ``recipe.yaml`` with the recipe
the comparison resolves to now:

- same recipe and a ``report.json``: the run is finished and is **reused** (not trained again);
- same recipe, no ``report.json`` (interrupted): **resumed** from its last complete checkpoint, or **redone** from
  scratch when it has none;
- a different recipe: refused with the first differing key, unless ``overwrite`` (then redone), so changing a
  comparison never silently throws away finished runs.

The training itself is injected (``distill``), so this module never imports the API layer above it.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import Field, ValidationError, model_validator

from kdkit.config import (describe_difference, load_recipe, read_recipe_file, recipe_differences, recipe_to_yaml,
                          with_current_defaults)
from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.errors import ConfigError
from kdkit.report.metric import distillation_metric
from kdkit.report.results import (PLAIN, markdown_table, metric_header, metric_notes, metric_scale, metrics_of,
                                  primary_of, show_metric)
from kdkit.report.seeds import NOTE as SEEDS_NOTE
from kdkit.report.seeds import (paired_cells, paired_differences, paired_interval, per_seed, per_seed_cells,
                               plot_paired, render_paired, render_per_seed)
from kdkit.schema import Seed, Strict, shorten

RecipeSource = str | dict[str, Any]


_Strict = Strict  # the recipe sections' base: unknown keys, NaN/inf and booleans for numbers are refused


class RunSpec(_Strict):
    """One row of the leaderboard: a recipe (file, shipped name or inline mapping) and its overrides. ``seeds``
    (optional) limits the run to those of the comparison's seeds, e.g. a setting that one seed already ruled out."""

    name: str = Field(min_length=1)
    recipe: RecipeSource
    set: list[str] = Field(default_factory=list)
    seeds: list[Seed] | None = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _distinct_seeds(self) -> "RunSpec":
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"run '{self.name}': 'seeds' repeats a seed: {self.seeds}")
        return self

    def seeds_of(self, seeds: list[int]) -> list[int]:
        """Which of the comparison's ``seeds`` this run is trained with."""
        return list(seeds) if self.seeds is None else [seed for seed in seeds if seed in self.seeds]


class GridSpec(_Strict):
    """Every combination of ``keys`` (recipe key → list of values) applied to one recipe, one run each."""

    recipe: RecipeSource
    name: str | None = None
    keys: dict[str, list[Any]] = Field(min_length=1)
    set: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _non_empty_values(self) -> "GridSpec":
        for key, values in self.keys.items():
            if not values:
                raise ValueError(f"grid key '{key}' has no values")
        return self


class Comparison(_Strict):
    """A comparison file: which runs, which seeds, where the results go, and the α of the distillation metric.

    ``set`` is applied to every run before the run's own ``set``; ``training.seed`` is set last, per seed. Seeds are
    distinct integers in 0..2³² − 1 (at most 1000); ``alpha`` is in [0, 1]. ``contrasts`` are pairs of run names
    (or ``<run> gen <g>`` generations) whose difference paired by seed the leaderboard adds to every run − baseline.
    """

    name: str = "compare"
    description: str | None = None
    output_dir: str | None = None
    baseline: str | None = None
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=1000)
    alpha: float = Field(0.5, ge=0, le=1)
    set: list[str] = Field(default_factory=list)
    runs: list[RunSpec] = Field(default_factory=list)
    grid: GridSpec | None = None
    contrasts: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "Comparison":
        if not self.runs and self.grid is None:
            raise ValueError("a comparison needs 'runs' or 'grid' (or both)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"'seeds' repeats a seed: {self.seeds}")
        names = [run.name for run in self.expanded_runs()]
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline '{self.baseline}' is not a run; runs: {', '.join(names)}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"run names must be unique; repeated: {', '.join(duplicates)}")
        for a, b in self.contrasts:
            for side in (a, b):  # a born-again run's generations are rows '<run> gen <g>' of their own
                if side not in names and not any(re.fullmatch(re.escape(n) + r" gen \d+", side) for n in names):
                    raise ValueError(f"contrast '{a}' − '{b}': '{side}' is not a run; runs: {', '.join(names)}")
            if a == b:
                raise ValueError(f"contrast '{a}' − '{b}' compares a run with itself")
        return self

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/compare-{self.name}")

    def expanded_runs(self) -> list[RunSpec]:
        """The explicit runs, then one run per grid combination, named ``<grid name>-<key>=<value>-…``."""
        runs = list(self.runs)
        if self.grid is not None:
            grid = self.grid
            prefix = grid.name or (Path(grid.recipe).stem if isinstance(grid.recipe, str) else "grid")
            keys = list(grid.keys)
            for values in itertools.product(*grid.keys.values()):
                pairs = [f"{key}={_scalar(value)}" for key, value in zip(keys, values)]
                label = "-".join(f"{key.rsplit('.', 1)[-1]}={_scalar(value)}" for key, value in zip(keys, values))
                runs.append(RunSpec(name=f"{prefix}-{label}", recipe=grid.recipe, set=grid.set + pairs))
        return runs


def _scalar(value: Any) -> str:
    """A value as ``--set`` would read it back (YAML flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name)


def parse_comparison(data: Any, base_dir: Path | None = None) -> Comparison:
    """Validate a comparison mapping; a recipe path is looked up beside the comparison file first."""
    if not isinstance(data, dict):
        raise ConfigError(f"a comparison must be a mapping of keys to values, got {type(data).__name__}")
    try:
        comparison = Comparison.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(shorten(str(part)) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "is unknown"
        # a check across keys (baseline, contrasts, names) says which keys itself
        raise ConfigError(f"comparison key '{key}' {message}" if key else f"comparison: {message}") from None
    if base_dir is not None:
        for spec in [*comparison.runs, *([comparison.grid] if comparison.grid else [])]:
            if isinstance(spec.recipe, str) and (base_dir / spec.recipe).is_file():
                spec.recipe = str(base_dir / spec.recipe)
    return comparison


def is_comparison_file(path: str | Path) -> bool:
    """A YAML file whose top level has ``runs`` or ``grid`` is a comparison, anything else a recipe."""
    path = Path(path)
    if not path.is_file():
        return False
    data = read_recipe_file(path)
    return isinstance(data, dict) and ("runs" in data or "grid" in data)


def load_comparison(source: str | Path | dict | Comparison) -> Comparison:
    if isinstance(source, Comparison):
        return source
    if isinstance(source, dict):
        return parse_comparison(source)
    path = Path(source)
    return parse_comparison(read_recipe_file(path), base_dir=path.parent)


def comparison_from_recipes(recipes: list[RecipeSource], seeds: list[int] | None = None, **fields) -> Comparison:
    """The simple case, ``kdkit compare A.yaml B.yaml --seeds 0 1 2``: one run per recipe, named after it."""
    runs, seen = [], {}
    for recipe in recipes:
        base = Path(recipe).stem if isinstance(recipe, str) else recipe.get("name", "run")
        seen[base] = seen.get(base, 0) + 1
        runs.append({"name": base if seen[base] == 1 else f"{base}-{seen[base]}", "recipe": recipe})
    return parse_comparison({"runs": runs, **({"seeds": seeds} if seeds else {}),
                             **{k: v for k, v in fields.items() if v is not None}})


def run_state(folder: Path, recipe_yaml: str) -> str:
    """``new``, ``finished``, ``interrupted`` (same recipe, no report) or ``stale: <first difference>``."""
    stored = folder / "recipe.yaml"
    if not folder.exists() or not any(folder.iterdir()):
        return "new"
    if not stored.is_file():
        return "stale: the folder holds no recipe.yaml"
    old, new = with_current_defaults(yaml.safe_load(stored.read_text())), yaml.safe_load(recipe_yaml)
    if old != new:
        return "stale: " + describe_difference(recipe_differences(old, new)[0])
    return "finished" if (folder / "report.json").is_file() else "interrupted"


def run_all(comparison: Comparison, distill: Callable[..., dict], *, overrides: list[str] | None = None,
            overwrite: bool = False, finished_only: bool = False) -> dict[str, list[dict]]:
    """Train (or reuse) every (run, seed); return ``{run name: [{seed, status, dir, report}, ...]}``.

    Every recipe is resolved and every existing folder checked before the first run trains, so a typo or a stale
    folder fails in seconds, not after hours of earlier runs. ``finished_only``: train nothing; a (run, seed) not
    finished yet is listed with status ``left out`` and no ``report`` (:func:`finished_results` splits them off).
    """
    out = comparison.resolved_output_dir()
    plan = []
    for run in comparison.expanded_runs():
        if run.seeds is not None:
            print(f"[kdkit] compare: run '{run.name}' limited to seeds {run.seeds_of(comparison.seeds)} "
                  f"(its own 'seeds': {run.seeds})")
        for seed in run.seeds_of(comparison.seeds):
            folder = out / _folder_name(run.name) / f"seed-{seed}"
            extra = [*comparison.set, *run.set, *(overrides or []), f"training.seed={seed}", f"output_dir={folder}"]
            recipe = load_recipe(run.recipe, extra)
            state = run_state(folder, recipe_to_yaml(recipe))
            if state.startswith("stale") and not overwrite:
                raise ConfigError(f"compare: run '{run.name}' seed {seed} in '{folder}' was made by a different "
                                  f"recipe ({state.removeprefix('stale: ')}); delete the folder or pass "
                                  f"--overwrite to redo it")
            plan.append((run.name, seed, folder, recipe, state))
    results: dict[str, list[dict]] = {}
    todo = sum(state != "finished" for *_, state in plan)
    done = 0
    for name, seed, folder, recipe, state in plan:
        if state != "finished" and finished_only:
            results.setdefault(name, []).append({"seed": seed, "status": "left out", "dir": str(folder)})
            continue
        if state == "finished":
            status = "reused"
            report = json.loads((folder / "report.json").read_text())
        else:
            resume = state == "interrupted" and last_complete_checkpoint(folder / "checkpoints") is not None
            status = "resumed" if resume else "trained"
            done += 1  # which of the runs still to do this is, so a long comparison shows how far it is
            print(f"[kdkit] compare ({done}/{todo} to do, {len(plan) - todo} reused): {name} seed {seed}: "
                  f"{status if resume else 'training'} in {folder}")
            report = distill(recipe, resume=resume, overwrite=not resume and state != "new")
        results.setdefault(name, []).append({"seed": seed, "status": status, "dir": str(folder), "report": report})
    return results


class NothingFinished(ConfigError):
    """``--finished-only`` on a comparison none of whose runs has finished (a document leaves it out, naming it)."""


def finished_results(results: dict[str, list[dict]], name: str) -> tuple[dict[str, list[dict]], list[str]]:
    """Split :func:`run_all`'s ``finished_only`` results: the finished runs (a run with no finished seed dropped)
    and ``"<run> seed <s>"`` for each one left out; a ConfigError when nothing of comparison ``name`` is finished."""
    left_out = [f"{run} seed {item['seed']}" for run, items in results.items() for item in items
                if "report" not in item]
    done = {run: kept for run, items in results.items() if (kept := [item for item in items if "report" in item])}
    if not done:
        raise NothingFinished(f"compare --finished-only: no run of '{name}' has finished yet ({len(left_out)} to do); "
                          f"run it without --finished-only to train them")
    return done, left_out


def expand_generations(results: dict[str, list[dict]], baseline: str | None = None
                       ) -> tuple[dict[str, list[dict]], str | None]:
    """One row per generation for each born-again run (a recipe with ``generations``), named ``<run> gen <g>``.

    Each generation is an ordinary run with its own ``report.json`` in ``<run dir>/gen-<g>``; its teacher is the
    previous generation, a row of the same table, so the generation's teacher fields are dropped (no teacher row
    per seed). A baseline that names a born-again run means its generation 0 (the run without a teacher). Other
    runs pass unchanged.
    """
    expanded: dict[str, list[dict]] = {}
    for name, items in results.items():
        if not all("generations" in item["report"] for item in items):
            expanded[name] = items
            continue
        for item in items:
            for gen in item["report"]["generations"]:
                report = json.loads((Path(gen["dir"]) / "report.json").read_text())
                report = {k: v for k, v in report.items() if k not in ("teacher", "teacher_source")}
                expanded.setdefault(f"{name} gen {gen['generation']}", []).append(
                    {**item, "dir": gen["dir"], "report": report})
        if baseline == name:
            baseline = f"{name} gen 0"
    return expanded, baseline


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and *sample* standard deviation (n − 1); the std is None for one value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _common_batch_sizes(reports: list[dict]) -> list[str]:
    sizes = None
    for report in reports:
        for role in ("teacher", "student"):
            if report.get(role) is None:  # a teacher-free run
                continue
            here = set(report[role].get("latency", {}))
            sizes = here if sizes is None else sizes & here
    return sorted(sizes or (), key=int)


def _median_of(entries: list[dict], key: str) -> float | None:
    """Median over seeds of an entry's ``key`` (``index_mb``: a retrieval model's index; ``size_mb``: the model's
    state dict on disk); None when no entry has it."""
    sizes = [e[key] for e in entries if e.get(key) is not None]
    return statistics.median(sizes) if sizes else None


def _latency_ms(entries: list[dict], sizes: list[str]) -> dict[str, float]:
    return {b: 1e3 * statistics.median(e["latency"][b]["median_s"] for e in entries) for b in sizes}


def _primary_metric(results: dict[str, list[dict]]) -> str:
    """The one primary metric of every run's reports; a leaderboard ranks on one metric, so a mix is refused."""
    by_run = {name: primary_of(item["report"]) for name, items in results.items() for item in items}
    primaries = set(by_run.values())
    if len(primaries) != 1:
        listed = ", ".join(f"{name}: {metric}" for name, metric in by_run.items())
        raise ConfigError(f"compare: the runs are scored on different primary metrics ({listed}); "
                          f"one leaderboard ranks runs on one metric")
    return primaries.pop()


def _other_means(entries: list[dict], primary: str) -> dict[str, float]:
    """Mean of every non-primary metric that all ``entries`` have (a metric some seeds lack is left out)."""
    metrics = [metrics_of(entry) for entry in entries]
    return {name: statistics.fmean(m[name] for m in metrics) for name in metrics[0]
            if name != primary and all(name in m for m in metrics)}


def leaderboard(results: dict[str, list[dict]], alpha: float = 0.5, baseline: str | None = None,
                contrasts: list[tuple[str, str]] | None = None) -> dict:
    """Aggregate per-seed reports into rows: one per teacher (by ``teacher_source``), then the runs sorted by mean
    primary metric (best first). Each row has ``score_mean`` ± ``score_std`` (sample std) of the primary metric
    over ``scores``, ``teacher_score`` and ``metrics_mean`` (the other metrics' means). ``pareto`` marks rows
    that no other row beats on both fewer-or-equal parameters and higher-or-equal score (strictly on one). With a
    ``baseline`` run, each student row also gets ``delta`` = its mean score minus the baseline's and ``delta_std``
    = √(s²/n + s_b²/n_b), the standard error of that difference (None unless both runs have several seeds, and
    for the baseline itself).

    With several seeds the board also has ``per_seed`` (:func:`kdkit.report.seeds.per_seed`) and ``paired``: the
    differences paired by seed (:func:`kdkit.report.seeds.paired_differences`) of every run against the baseline
    and of each of ``contrasts`` (pairs of run names); ``contrasts`` are given even for one seed, for their
    bootstrap interval."""
    primary = _primary_metric(results)
    all_reports = [item["report"] for items in results.values() for item in items]
    sizes = _common_batch_sizes(all_reports)
    every = [item for items in results.values() for item in items]
    measured_on = {id(item): _measured_on(item) for item in every}
    # the teacher is measured once per (run, seed); those evaluations go into its row, its score the mean and
    # sample std over seeds of each seed's mean (runs that score it differently, e.g. on longer passages, get a row
    # each, named by the setting)
    teachers, teacher_labels = _by_setting(
        [(str(item["report"].get("teacher_source", item["report"]["teacher"]["name"])), item,
          item["report"]["teacher"]) for item in every if item["report"].get("teacher")], measured_on)
    rows = []
    for (source, setting), measured in teachers.items():
        items = [item for item, _ in measured]
        entries = [entry for _, entry in measured]
        by_seed: dict = {}  # every run scores the seed's teacher: one value a seed (their mean), so the
        for item, entry in measured:  # spread is over seeds, not over runs × seeds
            by_seed.setdefault(item["seed"], []).append(metrics_of(entry)[primary])
        scores = [statistics.fmean(values) for values in by_seed.values()]
        mean, std = _mean_std(scores)
        if len({metrics_of(entry)[primary] for entry in entries}) == 1:
            std = None  # one model scored identically by every run: no spread to show
        rows.append({"run": f"teacher: {entries[0]['name']}{teacher_labels[source, setting]}", "role": "teacher",
                     "teacher": source,
                     "n": len({item["seed"] for item in items}), "evaluations": len(entries),
                     "score_mean": mean, "score_std": std, "scores": scores, "teacher_score": mean,
                     "metrics_mean": _other_means(entries, primary), "delta": None, "delta_std": None,
                     "params": entries[0]["params"], "index_mb": _median_of(entries, "index_mb"),
                     "latency_ms": _latency_ms(entries, sizes),
                     "speedup": {b: 1.0 for b in sizes}, "dm": None})
    # untrained systems measured beside (BM25, zero-shot), a row per name and data/evaluation setting
    references, reference_labels = _by_setting(
        [(name, item, entry) for item in every for name, entry in (item["report"].get("references") or {}).items()],
        measured_on)
    for (name, setting), measured in references.items():
        entries = [entry for _, entry in measured]
        scores = [metrics_of(entry)[primary] for entry in entries]
        mean, std = _mean_std(scores)
        rows.append({"run": f"reference: {name}{reference_labels[name, setting]}", "role": "reference",
                     "teacher": "",
                     "n": len({item["seed"] for item, _ in measured}),
                     "evaluations": len(entries), "score_mean": mean, "score_std": None if len(set(scores)) == 1
                     else std, "scores": scores, "teacher_score": None,
                     "metrics_mean": _other_means(entries, primary), "delta": None, "delta_std": None,
                     "params": entries[0]["params"], "index_mb": _median_of(entries, "index_mb"),
                     "latency_ms": _latency_ms(entries, sizes), "speedup": {}, "dm": None})
    students = []
    for name, items in results.items():
        students.append(_student_row(name, items, lambda report: report["student"], primary, sizes, alpha))
        variants = dict.fromkeys(v for item in items for v in item["report"].get("variants") or {})
        for variant in variants:  # the student before training, its int8 copy: rows of their own
            having = [item for item in items if variant in (item["report"].get("variants") or {})]
            row = _student_row(f"{name} · {variant}", having,
                               lambda report, v=variant: report["variants"][v], primary, sizes, alpha)
            students.append({**row, "variant": variant, "dirs": [], "train_minutes": None})  # not trained alone
    students.sort(key=lambda row: -row["score_mean"])
    base = next((row for row in students if row["run"] == baseline), None)
    read: dict = {}  # the baseline's per_query.json is in every interval: read each folder once
    for row in students:
        row["delta"] = row["score_mean"] - base["score_mean"] if base else None
        both = (base is not None and row is not base
                and row["score_std"] is not None and base["score_std"] is not None)
        row["delta_std"] = math.sqrt(row["score_std"] ** 2 / row["n"] + base["score_std"] ** 2 / base["n"]) \
            if both else None
        row["delta_ci"] = _interval(row, base, primary, read) if base is not None and row is not base \
            and row["delta_std"] is None and not row.get("variant") else None
    rows += students
    for row in rows:
        row["pareto"] = not any(
            other is not row and other["params"] <= row["params"] and other["score_mean"] >= row["score_mean"]
            and (other["params"] < row["params"] or other["score_mean"] > row["score_mean"]) for other in rows)
    several = any(len(items) > 1 for items in results.values())
    pairs = [(a, b) for a, b in contrasts or []]
    if several and baseline in results:
        pairs += [(name, baseline) for name in results if name != baseline and (name, baseline) not in pairs]
    return {"primary_metric": primary, "alpha": alpha, "baseline": baseline, "batch_sizes": [int(b) for b in sizes],
            "std": "sample (n-1)", "rows": rows, "per_seed": per_seed(results, primary) if several else None,
            "paired": paired_differences(results, pairs, primary)}


def _measured_on(item: dict) -> dict | None:
    """What decides how a run scores an untrained model (its teacher, a reference): the ``data`` and ``evaluation``
    sections of the run's ``recipe.yaml``; None when the run folder has none."""
    path = Path(item.get("dir") or "") / "recipe.yaml"
    if not item.get("dir") or not path.is_file():
        return None
    recipe = yaml.safe_load(path.read_text()) or {}
    return {section: recipe.get(section) for section in ("data", "evaluation")}


def _by_setting(measured: list[tuple[str, dict, dict]], measured_on: dict[int, dict | None]
                ) -> tuple[dict[tuple[str, str], list[tuple[dict, dict]]], dict[tuple[str, str], str]]:
    """Group ``(model name, run item, its entry)`` by name and the run's data/evaluation setting
    (:func:`_measured_on`), a model scored alike under every setting in one group; with each group's label
    (:func:`_setting_labels`)."""
    scored: dict[str, set[str]] = {}
    for name, _, entry in measured:
        scored.setdefault(name, set()).add(_key(metrics_of(entry)))
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    settings: dict[tuple[str, str], dict | None] = {}
    for name, item, entry in measured:
        setting = measured_on[id(item)] if len(scored[name]) > 1 else None
        groups.setdefault((name, _key(setting)), []).append((item, entry))
        settings[name, _key(setting)] = setting
    return groups, _setting_labels(settings)


def _key(setting: dict | None) -> str:
    return json.dumps(setting, sort_keys=True, default=str)


def _setting_labels(settings: dict[tuple[str, str], dict | None]) -> dict[tuple[str, str], str]:
    """For ``{(name, key): setting}``: ``""`` for a name measured under one setting, else `` · key=value, ...``
    naming the recipe keys in which that name's settings differ (e.g. `` · data.max_length=256``)."""
    by_name: dict[str, list[tuple[str, dict | None]]] = {}
    for (name, key), setting in settings.items():
        by_name.setdefault(name, []).append((key, setting))
    labels = {}
    for name, group in by_name.items():
        first = group[0][1]
        differing = sorted({k for _, setting in group[1:] for k, _, _ in recipe_differences(first, setting)})
        for key, setting in group:
            shown = [f"{k}={_scalar(_lookup(setting, k))}" for k in differing]
            labels[name, key] = f" · {', '.join(shown)}" if len(group) > 1 else ""
    return labels


def _lookup(data: Any, dotted: str) -> Any:
    """The value at a dotted key of :func:`kdkit.config.recipe_differences` (None where it is absent)."""
    for part in dotted.split(".") if dotted != "<recipe>" else []:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _interval(row: dict, base: dict, metric: str, read: dict, n: int = 10_000) -> list[float] | None:
    """:func:`kdkit.report.seeds.paired_interval` of two leaderboard rows (their seeds and run folders); ``read``
    is shared between the rows' calls."""
    return paired_interval(dict(zip(row["seeds"], row["dirs"])), dict(zip(base["seeds"], base["dirs"])), metric, n,
                           read=read)


def _student_row(name: str, items: list[dict], entry_of, primary: str, sizes: list[str], alpha: float) -> dict:
    """A student row over the seeds of one run; ``entry_of(report)`` picks the evaluated model (the student, or
    one of its variants)."""
    reports = [item["report"] for item in items]
    entries = [entry_of(r) for r in reports]
    scores = [metrics_of(entry)[primary] for entry in entries]
    mean, std = _mean_std(scores)
    params = entries[0]["params"]
    paired = [(r["teacher"], e) for r, e in zip(reports, entries) if r.get("teacher") is not None]
    teacher_mean = statistics.fmean(metrics_of(t)[primary] for t, _ in paired) if paired else None
    teacher_params = paired[0][0]["params"] if paired else None
    return {
        "run": name, "role": "student", "teacher": str(reports[0].get("teacher_source") or ""),
        "n": len(reports), "seeds": [item["seed"] for item in items],
        "status": {str(item["seed"]): item["status"] for item in items},
        "dirs": [item["dir"] for item in items],
        "score_mean": mean, "score_std": std, "scores": scores, "teacher_score": teacher_mean,
        "metrics_mean": _other_means(entries, primary), "params": params,
        "index_mb": _median_of(entries, "index_mb"), "size_mb": _median_of(entries, "size_mb"),
        "latency_ms": _latency_ms(entries, sizes), "train_minutes": _train_minutes(reports),
        "speedup": {b: statistics.median(t["latency"][b]["median_s"] / e["latency"][b]["median_s"]
                                         for t, e in paired) for b in sizes} if paired else {},
        "dm": distillation_metric(params, teacher_params, mean, teacher_mean, alpha) if teacher_mean else None}


def _train_minutes(reports: list[dict]) -> float | None:
    """Median over seeds of training's wall time in minutes (the reports' ``train_seconds``); None when a seed's
    report lacks it (written before kdkit recorded it)."""
    seconds = [report.get("train_seconds") for report in reports]
    return None if not seconds or None in seconds else statistics.median(seconds) / 60


def _other_metric_names(board: dict) -> list[str]:
    names: list[str] = []
    for row in board["rows"]:
        names += [name for name in row["metrics_mean"] if name not in names]
    return names


def _table(board: dict) -> tuple[list[str], list[list[str]]]:
    sizes = [str(b) for b in board["batch_sizes"]]
    baseline = board.get("baseline")
    primary = board["primary_metric"]
    others = _other_metric_names(board)
    indexed = any(row.get("index_mb") is not None for row in board["rows"])
    sized = any(row.get("size_mb") is not None for row in board["rows"])
    timed = any(row.get("train_minutes") is not None for row in board["rows"])
    scale, unit = metric_scale(primary)
    header = (["run", "seeds", metric_header(primary)]
              + ([f"Δ vs {baseline}" + (f" ({unit})" if unit else "")] if baseline else [])
              + [metric_header(name) for name in others]
              + [f"teacher {primary}" + (" (%)" if unit else ""), "params (M)"]
              + (["size (MB)"] if sized else [])
              + (["index (MB)"] if indexed else []) + (["train (min)"] if timed else [])
              + [f"latency b{b} (ms)" for b in sizes] + [f"speedup b{b}" for b in sizes]
              + [f"DM (α={board['alpha']:g})", "Pareto"])
    body = []
    for row in board["rows"]:
        score = show_metric(primary, row["score_mean"])
        if row["score_std"] is not None:
            score += f" ± {scale * row['score_std']:.2f}"
        delta = []
        if baseline:
            delta = ["—" if row.get("delta") is None else f"{scale * row['delta']:+.2f}"
                     + ("" if row.get("delta_std") is None else f" ± {scale * row['delta_std']:.2f}")
                     + ("" if row.get("delta_ci") is None else
                        f" [{scale * row['delta_ci'][0]:+.2f}, {scale * row['delta_ci'][1]:+.2f}]")]
        body.append([row["run"], str(row["n"]), score, *delta]
                    + [show_metric(name, row["metrics_mean"].get(name)) for name in others]
                    + [show_metric(primary, row["teacher_score"]), f"{row['params'] / 1e6:.3f}"]
                    + (["—" if row.get("size_mb") is None else f"{row['size_mb']:.1f}"] if sized else [])
                    + (["—" if row.get("index_mb") is None else f"{row['index_mb']:.1f}"] if indexed else [])
                    + ([_minutes(row)] if timed else [])
                    + [f"{row['latency_ms'][b]:.2f}" for b in sizes]
                    + [f"{row['speedup'][b]:.2f}x" if b in row["speedup"] else "—" for b in sizes]
                    + ["—" if row["dm"] is None else f"{row['dm']:.3f}", "yes" if row["pareto"] else ""])
    return header, body


def _minutes(row: dict) -> str:
    minutes = row.get("train_minutes")
    return "—" if minutes is None else f"{minutes:.1f}" if minutes < 100 else f"{minutes:.0f}"


def _note(boards: list[dict]) -> str:
    """The definitions under one or several tables; names each board's primary metric when they share one."""
    primaries = list(dict.fromkeys(board["primary_metric"] for board in boards))
    score = primaries[0] if len(primaries) == 1 else "the primary metric of each table"
    others = list(dict.fromkeys(name for board in boards for name in _other_metric_names(board)))
    plain = [p in PLAIN for p in primaries]
    units = ("in its own units" if all(plain) else "in %" if not any(plain)
             else f"in % ({', '.join(p for p in primaries if p in PLAIN)}: in its own units)")
    delta_units = ("in the metric's own units" if all(plain) else "in percentage points" if not any(plain)
                   else "in percentage points (in its own units for a metric not in %)")
    definitions = (
        f"Primary metric: {score} (higher is better), mean ± sample standard deviation (n − 1) over seeds, {units}; "
        "other metrics: mean over seeds. Latency: median over seeds of each run's median time of one forward pass "
        "(retrieval: of one query, encoded and searched over the corpus; index: the corpus index in MB; "
        "generation: of generating the recipe's max_new_tokens tokens greedily for b prompts); "
        "speedup: median over seeds of teacher/student latency. "
        + ("Train: median over seeds of training's wall time in minutes, summed over a run's resumes (a dash: the "
           "run's reports predate it, or a row not trained on its own). "
           if any(row.get("train_minutes") is not None for board in boards for row in board["rows"]) else "") +
        "DM = α·params_s/params_t + (1−α)·(1 − s_s/s_t), s the mean primary metric (Alkhulaifi et al., 2021); "
        "lower is better. "
        f"Δ: difference of mean primary metric to the baseline run, {delta_units}, ± the standard error of "
        "that difference √(s²/n + s_b²/n_b) when both runs have several seeds; otherwise, for runs scored per "
        "example on the same examples (classification, retrieval, generation), [the 95% paired bootstrap "
        "interval] over those examples (10,000 resamples, seed 0).")
    seeded = [SEEDS_NOTE] if any(board.get("per_seed") or board.get("paired") for board in boards) else []
    return " ".join([definitions, *seeded, *metric_notes(others)])


def _seed_tables(board: dict) -> list[str]:
    """Markdown lines of the per-seed table and the paired differences, when the board has them."""
    lines = []
    if board.get("per_seed"):
        lines += ["Per seed:", "", *render_per_seed(board["per_seed"]), ""]
    if board.get("paired"):
        lines += ["Differences paired by seed:", "", *render_paired(board["paired"]), ""]
    return lines


def render_markdown(board: dict, title: str = "Leaderboard") -> str:
    header, body = _table(board)
    lines = [f"# {title}", ""] + _left_out(board) + markdown_table(header, body)
    return "\n".join(lines + ["", *_seed_tables(board), _note([board]), ""])


def _left_out(board: dict) -> list[str]:
    """A paragraph naming the (run, seed)s a ``--finished-only`` table lacks (none: no lines)."""
    missing = board.get("left_out") or []
    return [f"Not finished yet, so not in these tables: {', '.join(missing)}.", ""] if missing else []


def render_html(board: dict, title: str = "Leaderboard") -> str:
    header, body = _table(board)

    def cells(tag: str, row: list[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>"

    def table(head: list[str], rows: list[list[str]]) -> str:
        return "<table>\n" + cells("th", head) + "\n" + "\n".join(cells("td", row) for row in rows) + "\n</table>\n"

    extra = ""
    if board.get("per_seed"):
        extra += "<h2>Per seed</h2>\n" + table(*per_seed_cells(board["per_seed"]))
    if board.get("paired"):
        extra += "<h2>Differences paired by seed</h2>\n" + table(*paired_cells(board["paired"]))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;text-align:right}"
            "td:first-child{text-align:left}</style></head><body>\n<h1>" + html.escape(title) + "</h1>\n"
            + "".join(f"<p>{html.escape(line)}</p>\n" for line in _left_out(board) if line)
            + table(header, body) + extra + "<p>" + html.escape(_note([board])) + "</p>\n</body></html>\n")


def chart_kind(board: dict) -> str:
    """``runs`` when every student has the same size (a parameter axis would put them all at one x), else
    ``params``."""
    return "runs" if len({row["params"] for row in board["rows"] if row["role"] == "student"}) <= 1 else "params"


def _params_label(count: float) -> str:
    """A parameter count as people write it: 500k, 20M, 13.7M, 1.2B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.3g}"


def _params_ticks(low: float, high: float, counts: list[int]) -> tuple[list[float], list[float]]:
    """Major ticks at 1-2-5 × 10^k (only 1 × 10^k when the range touches five decades or more) within [low, high],
    or at the rows' own sizes when fewer than two of those fall inside; minor ticks at the other m × 10^k,
    unlabelled."""
    decades = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
    steps = (1,) if len(decades) > 4 else (1, 2, 5)
    major = [m * 10.0 ** d for d in decades for m in steps if low <= m * 10.0 ** d <= high]
    if len(major) < 2:
        major = sorted(set(major) | {float(c) for c in counts})
    minor = [m * 10.0 ** d for d in decades for m in range(1, 10) if low <= m * 10.0 ** d <= high]
    return major, [tick for tick in minor if tick not in major]


def _score_label(row: dict, scale: float = 100.0) -> str:
    return f"{scale * row['score_mean']:.2f}" + ("" if row["score_std"] is None else
                                                 f" ± {scale * row['score_std']:.2f}")


def pareto_figure(board: dict, title: str = "Leaderboard") -> tuple[Any, str]:
    """The leaderboard's chart and its kind (see :func:`chart_kind`).

    ``runs``: one line per run, sorted best on top, its mean primary metric with a ±std error bar, each teacher a
    dashed vertical line. ``params``: parameters (log axis labelled 20M, 50M, …) against the primary metric, with
    ±std error bars and the Pareto front as a step line; the legend names each point with its score.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    kind = chart_kind(board)
    scale, unit = metric_scale(board["primary_metric"])
    label = board["primary_metric"] + (" (%)" if unit else "")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # never an offset or a ×10ⁿ on a percentage axis
    # teachers and untrained references (BM25, a zero-shot model) are lines across the runs' chart
    teachers = [row for row in board["rows"] if row["role"] in ("teacher", "reference")]
    if kind == "runs":
        students = sorted((row for row in board["rows"] if row["role"] == "student"), key=lambda r: r["score_mean"])
        fig, ax = plt.subplots(figsize=(9, 1.5 + 0.45 * len(students)))
        ax.errorbar([scale * r["score_mean"] for r in students], range(len(students)),
                    xerr=[scale * (r["score_std"] or 0) for r in students], fmt="o", capsize=3)
        ax.set_yticks(range(len(students)), [f"{r['run']}  {_score_label(r, scale)}" for r in students])
        ax.set_ylim(-0.6, len(students) - 0.4)
        styles = itertools.cycle(("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))))
        colours = itertools.cycle(("tab:grey", "tab:orange", "tab:green", "tab:purple", "tab:brown"))
        for style, row in zip(styles, teachers):  # teachers in black, references each in a colour of its own
            ax.axvline(scale * row["score_mean"], linestyle=style,
                       color="black" if row["role"] == "teacher" else next(colours),
                       label=f"{row['run']}  {_score_label(row, scale)}")
        if teachers:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(plain)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_title(f"{title} ({_params_label(students[0]['params'])} parameters each)")
    else:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        markers = itertools.cycle("o^vD<>ph*")
        handles = []
        placed = [row for row in board["rows"] if row["params"] > 0]  # BM25 has no parameters: no place on a log axis
        for row in placed:
            teacher = row["role"] == "teacher"
            # a legend rather than text beside the points: runs of one size and score would print on each other
            handles.append(ax.errorbar(row["params"], scale * row["score_mean"],
                                       yerr=scale * (row["score_std"] or 0),
                                       fmt="s" if teacher else next(markers), color="black" if teacher else None,
                                       capsize=3, label=f"{row['run']}  {_score_label(row, scale)}"))
        front = sorted((r for r in placed if r["pareto"]), key=lambda r: r["params"])
        if len(front) > 1:
            handles += ax.step([r["params"] for r in front], [scale * r["score_mean"] for r in front], where="post",
                               linestyle="--", color="grey", label="Pareto front")
        # in the table's order, the front last (matplotlib would list lines before error bars)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
        counts = [row["params"] for row in placed]
        low, high = min(counts) / 1.3, max(counts) * 1.3
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        major, minor = _params_ticks(low, high, counts)
        ax.xaxis.set_major_locator(FixedLocator(major))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _params_label(value)))
        ax.xaxis.set_minor_locator(FixedLocator(minor))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig, kind


def plot_pareto(board: dict, path: Path, title: str = "Leaderboard") -> Path:
    """Write :func:`pareto_figure`'s chart to ``path`` (PNG)."""
    fig, _ = pareto_figure(board, title)
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_leaderboard(out: Path, board: dict, title: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "html": out / "leaderboard.html", "json": out / "leaderboard.json",
             "png": out / "pareto.png", "paired": out / "paired.png"}
    paths["md"].write_text(render_markdown(board, title))
    paths["html"].write_text(render_html(board, title))
    paths["json"].write_text(json.dumps({"name": title, **board}, indent=2, default=_json_default) + "\n")
    plot_pareto(board, paths["png"], title)
    if plot_paired(board.get("paired") or [], paths["paired"], f"{title}: differences paired by seed") is None:
        paths.pop("paired").unlink(missing_ok=True)  # one from an earlier call would no longer match the table
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _versus_baseline(board: dict) -> str:
    """One sentence per direction: which runs beat the baseline's mean score, which did not, by how much."""
    baseline = board.get("baseline")
    rows = [r for r in board["rows"] if r["role"] == "student" and r["run"] != baseline and r["delta"] is not None]
    if not baseline or not rows:
        return ""

    scale, unit = metric_scale(board["primary_metric"])

    def item(row: dict) -> str:
        spread = "" if row["delta_std"] is None else f" ± {scale * row['delta_std']:.2f}"
        return f"{row['run']} ({scale * row['delta']:+.2f}{spread}{' ' + unit if unit else ''})"

    above = [item(r) for r in rows if r["delta"] > 0]
    below = [item(r) for r in rows if r["delta"] <= 0]
    return (f"Above {baseline}: {', '.join(above) or 'none'}. "
            f"Not above {baseline}: {', '.join(below) or 'none'}.")


def render_document(sections: list[tuple[Comparison, dict]], path: Path, title: str = "Results",
                    preamble: str = "", not_run: list[str] | None = None) -> Path:
    """One markdown document for several comparisons (``kdkit compare A.yaml B.yaml --document docs/results.md``):
    per comparison its description, leaderboard table, the runs above/below its baseline and its chart
    (next to the document as ``<stem>/<name>.png``, with the leaderboard's numbers as ``<stem>/<name>.json``).
    ``not_run``: the names of comparisons with no finished run (``--finished-only``), said under the preamble."""
    path = Path(path)
    figures = path.parent / path.stem
    figures.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""] + ([preamble.strip(), ""] if preamble.strip() else [])
    if not_run:
        lines += [f"No run finished yet, so no table here: {', '.join(not_run)}.", ""]
    for comparison, board in sections:
        header, body = _table(board)
        png = figures / f"{_folder_name(comparison.name)}.png"
        plot_pareto(board, png, comparison.name)
        # the numbers behind the table (per-seed scores, run folders), kept beside the document
        png.with_suffix(".json").write_text(json.dumps({"name": comparison.name, **{
            k: v for k, v in board.items() if k != "files"}}, indent=2, default=_json_default) + "\n")
        lines += [f"## {comparison.name}", ""]
        if comparison.description:
            lines += [comparison.description.strip(), ""]
        lines += _left_out(board) + markdown_table(header, body) + [""]
        versus = _versus_baseline(board)
        if versus:
            lines += [versus, ""]
        lines += _seed_tables(board)
        what = (f"{board['primary_metric']} per run" if chart_kind(board) == "runs"
                else f"parameters vs {board['primary_metric']}")
        lines += [f"![{comparison.name}: {what}]({figures.name}/{png.name})", ""]
        paired = figures / f"{_folder_name(comparison.name)}-paired.png"
        if plot_paired(board.get("paired") or [], paired, f"{comparison.name}: differences paired by seed"):
            lines += [f"![{comparison.name}: differences paired by seed]({figures.name}/{paired.name})", ""]
        for i, extra in enumerate(board.get("figures", [])):  # the task's own pictures (Task.compare_figures)
            copy = figures / f"{_folder_name(comparison.name)}-{i + 1}.png"
            shutil.copyfile(extra["path"], copy)
            lines += [f"![{comparison.name}: {extra['caption']}]({figures.name}/{copy.name})", ""]
        for extra in board.get("tables", []):  # the task's own tables (Task.compare_tables)
            lines += [f"{extra['caption']}:", "", extra["markdown"].rstrip(), ""]
    lines += [_note([board for _, board in sections]), ""]
    path.write_text("\n".join(lines))
    return path


def compare(comparison: Comparison, distill: Callable[..., dict], *, overrides: list[str] | None = None,
            overwrite: bool = False, finished_only: bool = False) -> dict:
    """Run (or reuse) every run × seed, then write the leaderboard files; return the leaderboard dict.

    ``finished_only``: train nothing and make the tables of the runs finished so far (to look at a long comparison
    while another process runs it); the board's ``left_out`` names the (run, seed)s missing from them."""
    results = run_all(comparison, distill, overrides=overrides, overwrite=overwrite, finished_only=finished_only)
    results, left_out = finished_results(results, comparison.name) if finished_only else (results, [])
    results, baseline = expand_generations(results, comparison.baseline)
    # a contrast naming a born-again run means its generation 0, as the baseline does
    contrasts = [tuple(side if side in results else f"{side} gen 0" for side in pair) for pair in comparison.contrasts]
    contrasts = [pair for pair in contrasts if all(side in results for side in pair)]  # a side may be left out
    board = {**leaderboard(results, comparison.alpha, baseline, contrasts), "left_out": left_out}
    out = comparison.resolved_output_dir()
    paths = write_leaderboard(out, board, comparison.name)
    return {"name": comparison.name, **board, "files": {k: str(v) for k, v in paths.items()}}
