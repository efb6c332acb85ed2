"""Runs that are several ordinary runs in a row, each reading what the one before exported (born-again generations,
multi-stage recipes): which of them to reuse, resume or train, by the rule of ``kdkit compare``.

A run folder made by the same recipe with a ``report.json`` is reused; one without (interrupted) is resumed from
its last complete checkpoint, or redone when it has none; one made by another recipe is refused unless
``overwrite`` (then redone). Once one run of the sequence is trained, every later one is trained again too: what it
starts from changed. The runs themselves are injected (``distill``), so the engine never imports the API layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from accelerate import PartialState

from kdkit.config import Recipe, recipe_to_yaml
from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.errors import ConfigError
from kdkit.report.leaderboard import run_state


def run_in_order(recipe: Recipe, parts: list[Recipe], distill: Callable[..., dict], *, overwrite: bool,
                 what: str) -> list[tuple[dict, str, Path]]:
    """Train (or reuse) every part of ``recipe`` in order; ``(report, "trained" | "resumed" | "reused", folder)``
    each (the report is empty on the non-main processes of a multi-process run). ``recipe.yaml`` of the whole run
    is written to its ``output_dir`` first, so an interrupted run is recognised as this recipe's. Every folder is
    checked before the first part trains. ``what`` names a part in messages ("generation", "stage")."""
    plan = []
    for part in parts:
        folder = part.resolved_output_dir()
        status = run_state(folder, recipe_to_yaml(part))
        if status.startswith("stale") and not overwrite:
            raise ConfigError(f"{what}s: '{folder}' was made by a different recipe "
                              f"({status.removeprefix('stale: ')}); delete it or pass --overwrite to redo it")
        plan.append((part, folder, status))
    if PartialState().is_main_process:
        out = recipe.resolved_output_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    done, retrained = [], False
    for i, (part, folder, status) in enumerate(plan):
        if status == "finished" and not retrained:
            done.append((json.loads((folder / "report.json").read_text()), "reused", folder))
            continue
        resume_it = status == "interrupted" and not retrained and \
            last_complete_checkpoint(folder / "checkpoints") is not None
        print(f"[kdkit] {what} {i}: {'resuming' if resume_it else 'training'} in {folder}")
        report = distill(part, resume=resume_it, overwrite=not resume_it and status != "new")
        done.append((report, "resumed" if resume_it else "trained", folder))
        retrained = True
    return done
