"""Checkpoints that are either complete or absent, whenever the process dies.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file in place and its ``get_last_checkpoint`` takes the
highest-numbered folder, so a run killed while saving leaves a partial folder that the next ``--resume`` loads.
:class:`~kdkit.engine.DistillationTrainer` instead lets the Trainer write into ``STAGING_DIR/checkpoint-N``, then
:func:`commit` lists every file with its size in a marker, flushes them to disk and renames the folder into place
(one atomic ``rename`` within a filesystem). A checkpoint counts as complete when its marker is there and every
file it lists has the listed size, which also rejects folders written by other tools or truncated afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

MARKER = "kdkit_checkpoint.json"
# the Trainer's rotation globs "checkpoint-*" in the run folder: the staging folder must not match it
STAGING_DIR = ".staging"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _fsync(path: Path) -> None:
    if os.name == "nt" and path.is_dir():  # Windows cannot open a folder to flush it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(staged: str | Path, final: str | Path) -> Path:
    """Seal the fully written checkpoint folder ``staged`` and rename it to ``final``."""
    staged, final = Path(staged), Path(final)
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    marker = {"files": {p.relative_to(staged).as_posix(): p.stat().st_size for p in files}}
    (staged / MARKER).write_text(json.dumps(marker, indent=1))
    # a kill -9 keeps the page cache; the flush makes the checkpoint survive a power loss as well
    for path in [*files, staged / MARKER, *({p.parent for p in files} | {staged})]:
        _fsync(path)
    if final.exists():  # a leftover that was never complete, or one the run is writing again after a resume
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync(final.parent)
    return final


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` was sealed by :func:`commit` and still holds every file at its sealed size."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MARKER).read_text())["files"]
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, newest (highest N) first; none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)), reverse=True)


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (partial or foreign ones are passed over), or ``None``."""
    return next((p for p in checkpoints(folder) if is_complete(p)), None)
