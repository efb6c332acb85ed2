"""Tasks behind one interface (:class:`kdkit.engine.Task`): a recipe's ``task:`` names one of these.

Each task is one folder (or file) here whose class is decorated with :func:`register`; every module of the
package is imported, so a new task is one new folder. Trainer-based tasks (classification, ...) subclass
:class:`kdkit.engine.TrainerTask` and share the pipeline; tasks with their own loop implement ``run`` alone.
"""

from __future__ import annotations

import importlib
import pkgutil

TASKS: dict = {}


def register(cls):
    """Class decorator: make an instance of ``cls`` the task named ``cls.name``."""
    if not getattr(cls, "name", "") or cls.name in TASKS:
        raise ValueError(f"task name {getattr(cls, 'name', '')!r} is empty or taken")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str):
    from kdkit.errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"recipe key 'task': {name!r} is not a task; valid: {', '.join(TASKS)}")
    return TASKS[name]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
