"""Building students: one builder per ``student.init``, registered where it is defined.

A builder turns the recipe's ``student`` section into a model and the tokenizer it reads. What is task-specific
(the Auto class of the head, the label maps, how a named model is loaded) comes in a :class:`StudentContext` that
the task fills, so the same builder makes a classifier, a retriever or a language model. Builders:

- ``teacher_layers`` (:mod:`.layers`): a copy of the teacher keeping a subset of its blocks (DistilBERT-style);
- ``config`` (:mod:`.config`): random init from a (smaller) config;
- ``pretrained`` (:mod:`.pretrained`): a model as it is, with its own tokenizer;
- ``bilstm`` (:mod:`.bilstm`): a BiLSTM classifier over the teacher's tokenizer (cross-architecture).

Surgery that changes a trained model's shape (low-rank embedding blocks, width/depth sub-networks) is a builder
too: add one file here with a class decorated by :func:`register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from kdkit.errors import ConfigError


@dataclass
class StudentContext:
    """What a builder may use besides the recipe's ``student`` section; the task fills it.

    ``head`` holds the config entries the task's head needs (``id2label``/``label2id`` for classification);
    ``auto_class`` builds a model from a config (``AutoModelForSequenceClassification``); ``load_pretrained(name,
    key)`` returns ``(model, tokenizer)`` of a named model, folder or hub id with the task's head;
    ``load_config(name, key)`` returns ``(path, config)`` and ``load_tokenizer(name, key)`` a tokenizer; ``key`` is
    the recipe key named in errors.
    """

    teacher: nn.Module | None
    teacher_tokenizer: Any
    auto_class: Any
    load_pretrained: Callable[[str, str], tuple[nn.Module, Any]]
    load_config: Callable[[str, str], tuple[str, Any]]
    load_tokenizer: Callable[[str, str], Any]
    head: dict[str, Any] = field(default_factory=dict)


class StudentBuilder:
    """Base class of the builders: :meth:`check` the section (``ValueError`` with a one-line message), say whether
    the build needs the teacher, and :meth:`build` ``(model, tokenizer)``."""

    name: str = ""
    has_attention: bool = True  # False: losses that compare attention cannot apply (a BiLSTM)

    def check(self, cfg) -> None:
        """Raise ``ValueError`` naming the missing or unused key; nothing by default."""

    def needs_teacher(self, cfg) -> bool:
        return False

    def build(self, cfg, ctx: StudentContext) -> tuple[nn.Module, Any]:
        raise NotImplementedError


BUILDERS: dict[str, StudentBuilder] = {}


def register(cls: type[StudentBuilder]) -> type[StudentBuilder]:
    """Class decorator: make ``cls`` the builder of ``student.init: <cls.name>``."""
    if not cls.name or cls.name in BUILDERS:
        raise ValueError(f"student builder name {cls.name!r} is empty or taken")
    BUILDERS[cls.name] = cls()
    return cls


def builder(name: str) -> StudentBuilder:
    if name not in BUILDERS:
        raise ConfigError(f"recipe key 'student.init': {name!r} is not a student builder; valid: "
                          f"{', '.join(BUILDERS)}")
    return BUILDERS[name]


def build_student(cfg, ctx: StudentContext) -> tuple[nn.Module, Any]:
    """The student (and its tokenizer) that ``cfg.init``'s builder makes."""
    return builder(cfg.init).build(cfg, ctx)


# every file here registers its builders; the shipped ones first, in the order `kdkit info` lists them
_SHIPPED = ("layers", "config", "pretrained", "bilstm")
for _name in (*_SHIPPED, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _SHIPPED)):
    importlib.import_module(f"{__name__}.{_name}")

from kdkit.capture import find_layers  # noqa: E402  (re-exported: block lists are where layer subsets start)
from kdkit.students.bilstm import student_bilstm  # noqa: E402
from kdkit.students.config import student_from_config  # noqa: E402
from kdkit.students.layers import student_from_teacher_layers  # noqa: E402

__all__ = ["BUILDERS", "StudentBuilder", "StudentContext", "build_student", "builder", "find_layers", "register",
           "student_bilstm", "student_from_config", "student_from_teacher_layers"]
