"""What tasks with a loop of their own (dataset distillation, policy distillation) share with the Trainer pipeline:
the output-folder and ``--resume`` checks, the run folder's first files, sealed checkpoints, figures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from kdkit.config import recipe_to_yaml
from kdkit.engine.checkpoints import STAGING_DIR, commit
from kdkit.engine.pipeline import check_output_dir, check_resume_recipe
from kdkit.report.environment import environment


def check_run_folder(recipe, *, resume: bool, force: bool, overwrite: bool) -> Path:
    """The run's ``output_dir``, after the checks every task makes before anything is loaded or written."""
    out = recipe.resolved_output_dir()
    check_output_dir(out, resume, overwrite)
    if resume:
        check_resume_recipe(out, recipe, force=force)
    return out


def open_run_folder(out: Path, recipe, *, overwrite: bool) -> None:
    """A new run's folder: emptied with ``overwrite``, then ``recipe.yaml`` and ``environment.json``."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    (out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")


def save_checkpoint(out: Path, step: int, write: Callable[[Path], None], state: dict) -> Path:
    """``checkpoints/checkpoint-<step>``: ``write(folder)`` fills a staging folder, ``state.json`` holds ``state``,
    then it is sealed and renamed into place (:func:`kdkit.engine.checkpoints.commit`); older checkpoints go (the
    newest is enough to resume)."""
    staged = out / "checkpoints" / STAGING_DIR / f"checkpoint-{step}"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    write(staged)
    (staged / "state.json").write_text(json.dumps(state) + "\n")
    final = commit(staged, out / "checkpoints" / f"checkpoint-{step}")
    for old in (out / "checkpoints").glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def finish_plot(fig, ax, path: Path, xlabel: str, ylabel: str) -> Path:
    """Label the axes, add a light grid and the legend, write the figure to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, path)
    return path
