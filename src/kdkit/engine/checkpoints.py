"""Checkpoints that are either complete or absent, whenever the process dies.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file in place and its ``get_last_checkpoint`` takes the
highest-numbered folder, so a run killed while saving leaves a partial folder that the next ``--resume`` loads.
:class:`~kdkit.engine.DistillationTrainer` instead lets the Trainer write into ``STAGING_DIR/checkpoint-N``, then
:func:`commit` seals it with the artifact store's manifest (every file's size and sha256, :mod:`kdkit.store`),
flushes it to disk and renames the folder into place (one atomic ``rename`` within a filesystem). A checkpoint
counts as complete when its manifest is there and every file it lists has the listed size, which also rejects
folders written by other tools or truncated afterwards; a resume also checks the contents (sha256), so a file
corrupted at the same size sends it to the checkpoint before.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from kdkit.errors import CacheError
from kdkit.store import fsync_dir, seal, verify

MARKER = "kdkit_checkpoint.json"
# the Trainer's rotation globs "checkpoint-*" in the run folder: the staging folder must not match it
STAGING_DIR = ".staging"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def commit(staged: str | Path, final: str | Path) -> Path:
    """Seal the fully written checkpoint folder ``staged`` (every file's size and sha256, flushed, the manifest
    last: :func:`kdkit.store.seal`) and rename it to ``final``."""
    staged, final = Path(staged), Path(final)
    # a kill -9 keeps the page cache; the flush makes the checkpoint survive a power loss as well
    seal(staged, {"kind": "checkpoint", "name": final.name}, name=MARKER)
    if final.exists():  # a leftover that was never complete, or one the run is writing again after a resume
        shutil.rmtree(final)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def is_complete(folder: str | Path, *, hashes: bool = False) -> bool:
    """Whether ``folder`` was sealed by :func:`commit` and still holds every file at its sealed size (and, with
    ``hashes``, its sealed content: a file corrupted at the same size is caught)."""
    try:
        verify(Path(folder), name=MARKER, hashes=hashes)
        return True
    except CacheError:
        return False


def checkpoint_step(folder: str | Path) -> int:
    """N of a ``checkpoint-N`` folder: the optimiser steps its state has taken."""
    return int(_CHECKPOINT.match(Path(folder).name).group(1))


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, newest (highest N) first; none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=checkpoint_step, reverse=True)


def last_complete_checkpoint(folder: str | Path, *, hashes: bool = False) -> Path | None:
    """The newest complete checkpoint in ``folder`` (partial, corrupt with ``hashes``, or foreign ones are passed
    over), or ``None``."""
    return next((p for p in checkpoints(folder) if is_complete(p, hashes=hashes)), None)
