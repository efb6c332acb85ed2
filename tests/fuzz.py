"""Bad inputs generated from the schemas themselves: recipe keys, CLI flags and data files (see ``test_fuzz.py``).

Nothing here lists keys or flags. The recipe's keys come from a task's typed recipe (its sections, fields,
annotations and bounds, and the loss configs the registry holds for the task); the flags come from the click
command tree typer builds; the data columns come from the task's data section. Each source gives, for every key,
the ways a value can be wrong for its type:

- numbers: below the lower bound, above the upper bound, NaN, ±inf, ``1e400`` (YAML text), a boolean, a string,
  a list; integers also a fraction and 2⁷⁰;
- booleans: 1, 0, ``"yes"``, 1.0; literals: a name that is not one of the choices, a number;
- strings: empty, whitespace only, longer than any path, a number, a list; sections: a scalar, a list, an unknown
  key; lists: a scalar, a list holding a bad item; free mappings: a scalar, a NaN inside, nesting 40 deep;
- a required key left out; ``null`` where the key is not optional.

:func:`recipe_cases` is the deterministic sweep (every key × every kind); :func:`bad_value` is the same per kind
as a ``hypothesis`` strategy drawing random values of that kind (any float above the bound, any text that is not
a choice, ...).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import io
import math
import os
import signal
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

from kdkit.schema import STR_MAX, shorten  # noqa: F401  (re-exported for the tests)

LONG = "p" * (STR_MAX + 1)
DEEP: Any = 0
for _ in range(40):
    DEEP = {"k": DEEP}


@dataclass(frozen=True)
class Key:
    """One key of a recipe: where it is (keys and list indices), its annotation (``Optional`` removed), bounds."""

    path: tuple
    annotation: Any
    optional: bool
    required: bool
    bounds: dict = field(default_factory=dict, hash=False, compare=False)
    entry: dict | None = field(default=None, hash=False, compare=False)  # a loss entry that holds the key

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)

    @property
    def label(self) -> str:
        """The dotted path, with the loss a key of a loss entry belongs to: ``losses.2[kd].temperature``."""
        if self.entry is None:
            return self.dotted
        i = next(i for i, p in enumerate(self.path) if isinstance(p, int))
        head, tail = self.path[: i + 1], self.path[i + 1:]
        return ".".join(map(str, head)) + f"[{self.entry['name']}]." + ".".join(map(str, tail))

    @property
    def name(self) -> str:
        """The last key name the error line must show (``losses.2.temperature`` → ``temperature``)."""
        return next(str(p) for p in reversed(self.path) if isinstance(p, str))


@dataclass(frozen=True)
class Case:
    key: Key
    kind: str
    value: Any = None
    text: str | None = None  # given as YAML text through ``--set key=text`` instead of in the file
    drop: bool = False  # the key left out

    @property
    def id(self) -> str:
        return f"{self.key.label}:{self.kind}"


def _unwrap(annotation: Any) -> tuple[Any, bool, dict]:
    """(core annotation, optional?, bounds) with ``Optional`` and ``Annotated`` peeled off."""
    bounds: dict = {}
    optional = False
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
            for meta in args[1:]:
                bounds.update(_bounds(getattr(meta, "metadata", [meta])))
        elif origin in (Union, types.UnionType) and type(None) in args:
            optional = True
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]
        else:
            return annotation, optional, bounds


def _bounds(metadata) -> dict:
    found = {}
    for item in metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(item, name, None)
            if value is not None and isinstance(item, (at.Ge, at.Gt, at.Le, at.Lt, at.MinLen, at.MaxLen)):
                found[name] = value
    return found


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _loss_members(annotation: Any) -> list[type[BaseModel]] | None:
    """The loss configs of ``list[Union[...]]`` (or of a one-member list), else ``None``."""
    if typing.get_origin(annotation) is not list:
        return None
    item, _, _ = _unwrap(typing.get_args(annotation)[0])
    members = typing.get_args(item) if typing.get_origin(item) is Union else (item,)
    return list(members) if members and all(is_section(m) for m in members) else None


def keys(model: type[BaseModel], base: dict, path: tuple = ()) -> list[Key]:
    """Every key of ``model`` (sections recursively; each loss config once, as a new entry appended to
    ``base``'s ``losses``; a list of plain sections through its first item)."""
    found: list[Key] = []
    for name, info in model.model_fields.items():
        core, optional, bounds = _unwrap(info.annotation)
        bounds.update(_bounds(info.metadata))
        here = (*path, name)
        found.append(Key(here, core, optional, info.is_required(), bounds))
        if is_section(core):
            found += keys(core, base, here)
        members = _loss_members(core)
        if members and "name" not in members[0].model_fields:  # a list of plain sections (learners): its first
            found += keys(members[0], base, (*here, 0))
        elif members and typing.get_origin(_unwrap(members[0].model_fields["name"].annotation)[0]) is not Literal:
            # `stages`: the key itself is fuzzed (not a list, empty, an item not a mapping); the keys inside a
            # stage are a recipe's own keys again, their bad values are tests/engine/test_stages.py's
            continue
        elif members:
            index = len(_get(base, here) or [])
            for member in members:
                names = typing.get_args(_unwrap(member.model_fields["name"].annotation)[0])
                entry = {"name": names[0]}
                for sub in keys(member, base, (*here, index)):
                    if sub.path[-1] != "name" or len(names) == 1:
                        found.append(Key(sub.path, sub.annotation, sub.optional, sub.required, sub.bounds, entry))
    return found


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def apply(base: dict, case: Case) -> tuple[dict, list[str]]:
    """``base`` with the case's key set (or removed), and the ``--set`` arguments that go with it."""
    recipe = copy.deepcopy(base)
    key = case.key
    node: Any = recipe
    for i, part in enumerate(key.path[:-1]):
        nxt = key.path[i + 1]
        if isinstance(node, list):
            if part == len(node):
                node.append(copy.deepcopy(key.entry))
            node = node[part]
        else:
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = key.path[-1]
    if case.drop:
        node.pop(last, None)
        return recipe, []
    if case.text is not None:
        return recipe, ["--set", f"{key.dotted}={case.text}"]
    node[last] = case.value
    return recipe, []


# --- running one input through the command line ---

class Outcome:
    def __init__(self, code, err: str, written: list[str]):
        self.code, self.err, self.written = code, err, written
        self.lines = err.strip().splitlines()

    def problem(self, names: tuple[str, ...]) -> str | None:
        """What breaks the contract, or ``None``; ``names``: one of them must be in the error line."""
        last = self.lines[-1] if self.lines else ""
        if "Traceback" in self.err:
            return "traceback: " + self.err[-600:]
        if self.code != 2:
            return f"exit {self.code}: {last[:300]}"
        if not last.startswith("error: "):
            return f"last line is not 'error: ': {last[:300]}"
        if sum(line.lstrip().lower().startswith("error") for line in self.lines) != 1:
            return "more than one error line: " + " | ".join(self.lines)[:400]
        if len(last) > 600:
            return f"error line of {len(last)} characters"
        if not any(name in last for name in names):
            return f"error line does not name {' or '.join(names)}: {last[:300]}"
        if self.written:
            return f"wrote {self.written[:5]}: {last[:200]}"
        return None


def run_case(folder: Path, argv: list[str], cwd: Path | None = None) -> Outcome:
    """``kdkit argv`` in-process with the cache in ``folder/cache`` and the working directory ``cwd`` (default
    ``folder``); what it wrote in ``folder`` (besides what was there) is returned."""
    cache = folder / "cache"
    before = {p for p in folder.rglob("*")}
    old_cwd, old_cache = os.getcwd(), os.environ.get("KDKIT_CACHE")
    os.environ["KDKIT_CACHE"] = str(cache)
    os.chdir(cwd or folder)
    err, out = io.StringIO(), io.StringIO()
    from kdkit.cli import main
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main(argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("KDKIT_CACHE", None)
        else:
            os.environ["KDKIT_CACHE"] = old_cache
    written = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)
    return Outcome(code, err.getvalue(), written)


def recipe_model(task: str):
    """The typed recipe of a registered task, with its loss union as :func:`kdkit.config.parse_recipe` builds it."""
    from kdkit import config, terms
    from kdkit.tasks import TASKS

    return config._recipe_model(TASKS[task].recipe, task, tuple(terms.loss_names(task)))



def run_recipe_case(case: Case, base: dict, folder: Path) -> str | None:
    recipe, extra = apply({**base, "output_dir": str(folder / "run")}, case)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    outcome = run_case(folder, ["distill", str(folder / "recipe.yaml"), *extra])
    return outcome.problem((case.key.name,))


CASE_SECONDS = 60  # a bad value is refused in well under a second; one that runs this long was let through


class _TooLong(BaseException):
    """Not an Exception, so kdkit's own handlers cannot turn it into an exit code."""


def _too_long(signum, frame):
    raise _TooLong


def sweep(root: Path, cases, run) -> list[str]:
    """Run every case in its own folder; the ids and problems of those that break the contract. A case still
    running after ``CASE_SECONDS`` (a value that validated and then set off work it cannot finish, such as 2**70
    examples) is stopped and counted as a failure."""
    failures = []
    previous = signal.signal(signal.SIGALRM, _too_long)
    for i, case in enumerate(cases):
        folder = root / f"case-{i}"
        signal.alarm(CASE_SECONDS)
        try:
            problem = run(case, folder)
        except _TooLong:
            problem = f"still running after {CASE_SECONDS} s: the value was accepted"
        finally:
            signal.alarm(0)
            shutil.rmtree(folder, ignore_errors=True)
        if problem:
            failures.append(f"{case.id}: {problem}")
    signal.signal(signal.SIGALRM, previous)
    return failures


# --- bad values of each kind, for one annotation ---

def _number_cases(core, bounds) -> list[tuple[str, Any, str | None]]:
    cases: list[tuple[str, Any, str | None]] = []
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None:
        below = low - 1 if core is int and "ge" in bounds else low if "gt" in bounds else low - abs(low) * 0.5 - 1e-9
        cases.append(("below-minimum", below, None))
    if high is not None:
        above = high + 1 if core is int else high if "lt" in bounds else high * 2 + 1
        cases.append(("above-maximum", above, None))
    cases += [("nan", math.nan, None), ("inf", math.inf, None), ("minus-inf", -math.inf, None),
              ("1e400-text", None, "1e400"), ("nan-text", None, ".nan"), ("bool", True, None),
              ("string", "seven", None), ("list", [1], None)]
    if core is int:
        cases += [("fraction", 1.5 if low is None or low < 1.5 else low + 0.5, None), ("huge-int", 2**70, None)]
    return cases


def value_cases(key: Key) -> list[tuple[str, Any, str | None]]:
    """(kind, value, YAML text or None) of every way ``key``'s value can be wrong."""
    core, bounds = key.annotation, key.bounds
    cases: list[tuple[str, Any, str | None]] = []
    if not key.optional and not key.required:
        cases.append(("null", None, None))
    if key.required and key.path[-1] != "name":
        cases.append(("missing", None, None))
    origin = typing.get_origin(core)
    if core in (int, float):
        return cases + _number_cases(core, bounds)
    if core is bool:
        return cases + [("one", 1, None), ("zero", 0, None), ("yes-string", "yes", None), ("float", 1.0, None)]
    if origin is Literal:
        return cases + [("not-a-choice", "not-" + str(typing.get_args(core)[0]), None), ("number", 3, None)]
    if core is str:
        return cases + [("empty", "", None), ("blank", "  \t", None), ("too-long", LONG, None),
                        ("number", 7, None), ("list", ["a"], None)]
    if is_section(core):
        return cases + [("scalar", 5, None), ("list", [1], None), ("unknown-key", {"no_such_key": 1}, None)]
    if origin is list:
        item, _, item_bounds = _unwrap(typing.get_args(core)[0])
        cases += [("scalar", 5, None), ("mapping", {"a": 1}, None)]
        if _loss_members(core) is None:
            bad_item = {int: -1 if item_bounds.get("ge", item_bounds.get("gt", -1)) >= 0 else math.nan,
                        str: "", float: math.nan}.get(item, True)
            cases.append(("bad-item", [bad_item], None))
        else:
            cases += [("empty", [], None), ("item-not-a-mapping", [7], None)]
        return cases
    if origin is dict:
        return cases + [("scalar", 5, None), ("list", [1], None), ("nan-inside", {"k": math.nan}, None),
                        ("deep", DEEP, None)]
    return cases


def recipe_cases(model: type[BaseModel], base: dict) -> list[Case]:
    """Every key of ``model`` × every way its value can be wrong, applied to ``base`` (a valid recipe)."""
    found: list[Case] = []
    for key in keys(model, base):
        if key.path[-1] == "name" and len(key.path) == 3:  # a loss entry's name: not a loss
            found.append(Case(key, "unknown-loss", "no_such_loss"))
            continue
        for kind, value, text in value_cases(key):
            found.append(Case(key, kind, value, text, drop=kind == "missing"))
    return found


def bad_value(key: Key) -> st.SearchStrategy:
    """Random bad values for ``key``: the kinds of :func:`value_cases`, each with random members."""
    core, bounds = key.annotation, key.bounds
    origin = typing.get_origin(core)
    wrong_type = st.one_of(st.lists(st.integers(), min_size=1, max_size=3),
                           st.dictionaries(_text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=2))
    if core in (int, float):
        options = [st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans(),
                   _text(min_size=1, max_size=12).filter(lambda s: not _numeric(s)), wrong_type]
        low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
        if core is int:
            if low is not None:
                options.append(st.integers(max_value=low - 1 if "ge" in bounds else low))
            if high is not None:
                options.append(st.integers(min_value=high + 1 if "le" in bounds else high))
            options.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)))
        else:
            if low is not None:
                options.append(st.floats(max_value=low, exclude_max="ge" in bounds, allow_nan=False))
            if high is not None:
                options.append(st.floats(min_value=high, exclude_min="le" in bounds, allow_nan=False))
        return st.one_of(options)
    if core is bool:
        return st.one_of(st.integers(), st.floats(allow_nan=False), _text(max_size=8), wrong_type)
    if origin is Literal:
        choices = set(typing.get_args(core))
        return st.one_of(_text(max_size=20).filter(lambda s: s not in choices), st.integers(), wrong_type)
    if core is str:
        return st.one_of(st.text(alphabet=" \t\n\r", max_size=6), st.integers(), st.floats(), wrong_type,
                         _text(min_size=STR_MAX + 1, max_size=STR_MAX + 40))
    if is_section(core):
        return st.one_of(st.integers(), _text(max_size=10), st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.sampled_from(["zz", "unknown_key", "x1"]), st.integers(), min_size=1))
    if origin is list:
        return st.one_of(st.integers(), _text(max_size=10), st.dictionaries(_text(max_size=3), st.integers(),
                                                                              min_size=1))
    if origin is dict:
        return st.one_of(st.integers(), _text(max_size=10), st.lists(st.integers(), min_size=1),
                         st.dictionaries(_text(min_size=1, max_size=5),
                                         st.sampled_from([math.nan, math.inf, -math.inf]), min_size=1))
    return st.nothing()


def _text(**kwargs) -> st.SearchStrategy:
    """Text a YAML file can hold (no lone surrogates)."""
    return st.text(alphabet=st.characters(exclude_categories=("Cs",)), **kwargs)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- command-line flags ---

@dataclass(frozen=True)
class Flag:
    """One parameter of one ``kdkit`` command, as the click tree typer builds says."""

    command: str
    name: str
    opt: str | None  # ``--batch-size``; ``None`` for a positional argument
    annotation: Any  # int, float, str or bool (the item type of a repeatable option)
    low: Any = None
    high: Any = None

    @property
    def names(self) -> tuple[str, ...]:
        """What the error line may call it."""
        return (self.opt,) if self.opt else (self.name.upper(), self.name)


def flags(group) -> list[Flag]:
    """Every parameter of every command of ``group`` (``typer.main.get_command(app)``)."""
    found = []
    for command_name, command in group.commands.items():
        for param in command.params:
            annotation = param.type_descriptor.annotation
            if typing.get_origin(annotation) is list:
                annotation = typing.get_args(annotation)[0]
            annotation, _, _ = _unwrap(annotation)
            opt = next((o for o in param.opts if o.startswith("--")), None) if param.param_type_name == "option" \
                else None
            found.append(Flag(command_name, param.name, opt, annotation, getattr(param, "min", None),
                              getattr(param, "max", None)))
    return found


def flag_values(flag: Flag) -> list[tuple[str, list[str], bool]]:
    """(kind, argv pieces, whether the pieces replace the command's positional arguments and go last) of each bad
    use."""
    if flag.annotation is bool:
        return [("given-a-value", [f"{flag.opt}=yes"], False)]
    if flag.annotation in (int, float):
        values = [("word", "abc"), ("empty", ""), ("nan", "nan"), ("inf", "inf"), ("1e400", "1e400"),
                  ("below-minimum", str(flag.low - 1 if flag.annotation is int else flag.low - 0.5)),
                  ("above-maximum", str(flag.high + 1))]
        if flag.annotation is int:
            values += [("fraction", "1.5"), ("huge", "9" * 30)]
        else:
            values += [("minus-inf", "-inf")]
    else:
        values = [("empty", ""), ("blank", "  \t"), ("nul", "a\0b")]
        if flag.name != "set_":  # a --set item may be as long as a recipe file
            values.append(("too-long", "p" * (STR_MAX + 1)))
        if not flag.opt:
            values.append(("leading-dash", "-x"))
    # a positional value goes after `--`, as a user passes one starting with '-' (else click reads an option)
    pieces = [(kind, [flag.opt, value] if flag.opt else ["--", value], flag.opt is None) for kind, value in values]
    if flag.opt:
        pieces.append(("missing-value", [flag.opt], False))
    return pieces


# --- data files ---

FORMATS = ("csv", "tsv", "jsonl", "json")
MISSING = object()  # a row without the column


@dataclass(frozen=True)
class DataCase:
    """One broken data file: the recipe key that names it, its format, what is wrong, and what the error line must
    hold besides the file's name (the line and the column, where the format has them)."""

    key: str
    fmt: str
    kind: str
    content: bytes | None  # ``None``: a directory of that name
    expect: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.key}.{self.fmt}:{self.kind}"


def data_fields(model: type[BaseModel]) -> tuple[list[str], dict[str, str]]:
    """The file keys (``*_file``) and the columns (``*_column`` → default name) of a task's data section."""
    files = [name for name in model.model_fields if name.endswith("_file")]
    columns = {name: info.default for name, info in model.model_fields.items() if name.endswith("_column")}
    return files, columns


def render(rows: list[dict], fmt: str) -> bytes:
    """``rows`` in format ``fmt`` (a value of :data:`MISSING` leaves the column out of that row)."""
    import csv
    import io
    import json

    if fmt in ("jsonl", "json"):
        kept = [{k: v for k, v in row.items() if v is not MISSING} for row in rows]
        if fmt == "json":
            return json.dumps(kept).encode()
        return "".join(json.dumps(row) + "\n" for row in kept).encode()
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow(["" if v is MISSING else v for v in row.values()])
    return out.getvalue().encode()


def first_line_of_row(fmt: str, index: int) -> int | None:
    """The 1-based line of row ``index`` as :func:`render` writes it (``None`` for json: no lines)."""
    return {"csv": index + 2, "tsv": index + 2, "jsonl": index + 1}.get(fmt)


def data_cases(model: type[BaseModel], rows: list[dict], row: int = 3, formats: tuple[str, ...] = FORMATS,
               columns: dict[str, str] | None = None) -> list[DataCase]:
    """Every file key × format × way a file can be broken: values of one row (per column), the file as a whole,
    and a label the training split does not have (for the other splits). ``columns`` (key → column name) default
    to the section's ``*_column`` keys; a task with fixed fields (retrieval's query/positive) names them."""
    files, declared = data_fields(model)
    columns = declared if columns is None else columns
    label = columns.get("label_column")
    cases: list[DataCase] = []
    for key in files:
        for fmt in formats:
            typed = fmt in ("jsonl", "json")
            line = first_line_of_row(fmt, row)
            at_line = (f"line {line}",) if line else ()
            for column in columns.values():
                bad = {"empty": "", "blank": "  \t"}
                if typed:
                    bad.update({"missing": MISSING, "null": None, "nan": math.nan, "list": [1], "mapping": {"a": 1}})
                    bad.update({"fraction": 1.5, "true": True} if column == label else {"number": 5})
                elif column == label:
                    bad.update({"nan-text": "NaN", "other-kind": "3"})
                for kind, value in bad.items():
                    broken = [dict(r) for r in rows]
                    broken[row][column] = value
                    expect = (*at_line, column) if kind not in ("other-kind",) else (column,)
                    cases.append(DataCase(key, fmt, f"{column}-{kind}", render(broken, fmt), expect))
            good = render(rows, fmt)
            whole = {"empty-file": b"", "whitespace-file": b" \n\t\n", "not-utf8": good.replace(b"e", b"\xff", 1),
                     "directory": None}
            if fmt == "jsonl":
                whole.update({"null-line": good + b"null\n", "array-line": good + b"[1, 2]\n",
                              "truncated": good + b'{"text": "go'})
            elif fmt == "json":
                whole.update({"not-a-list": b'{"a": 1}', "truncated": good[:-7]})
            else:
                sep = b"\t" if fmt == "tsv" else b","
                whole.update({"header-only": good.split(b"\n")[0] + b"\n",
                              "extra-field": good + b"a" + sep + b"b" + sep + b"c\n",
                              "unclosed-quote": good + b'"never closed' + sep + b"pos\n"})
            for column in columns.values():
                whole[f"no-{column}-column"] = render([{(k + "_renamed" if k == column else k): v
                                                        for k, v in r.items()} for r in rows], fmt)
            for kind, content in whole.items():
                cases.append(DataCase(key, fmt, kind, content))
            if label and key != "train_file":
                broken = [dict(r) for r in rows]
                broken[row][label] = "a-class-train-lacks"
                cases.append(DataCase(key, fmt, "unseen-label", render(broken, fmt), ("a-class-train-lacks",)))
    return cases


def bad_cell(fmt: str, column: str, label: str | None) -> st.SearchStrategy:
    """Random values one cell of column ``column`` must be refused with, in format ``fmt``."""
    blank = st.text(alphabet=" \t", max_size=4)
    if fmt in ("csv", "tsv"):
        return blank if column != label else st.one_of(blank, st.sampled_from(["NaN", "nan", " NaN "]),
                                                        st.integers().map(str))
    wrong = st.one_of(st.none(), blank, st.just(math.nan), st.lists(st.integers(), min_size=1, max_size=3),
                      st.dictionaries(_text(min_size=1, max_size=3), st.integers(), min_size=1, max_size=2))
    if column == label:  # the other labels are strings: a number is another kind, a fraction no class at all
        return st.one_of(wrong, st.integers(), st.floats(allow_nan=False, allow_infinity=False))
    return st.one_of(wrong, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans())


def bad_flag_value(flag: Flag) -> st.SearchStrategy:
    """Random values ``flag`` must refuse."""
    if flag.annotation in (int, float):
        numbers = [st.text(max_size=8).filter(lambda s: not _numeric(s)),
                   st.integers(max_value=int(math.ceil(flag.low)) - 1).map(str),
                   st.integers(min_value=int(flag.high) + 1).map(str)]
        if flag.annotation is int:
            numbers.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)).map(repr))
        return st.one_of(numbers)
    return st.one_of(st.text(alphabet=" \t\r\n", max_size=5),
                     st.tuples(_text(max_size=5), _text(max_size=5)).map(lambda t: t[0] + "\0" + t[1]))
