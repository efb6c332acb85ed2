"""What every benchmark shares: the machine description, interleaved A/B repetitions, the models and batches they
run on, and the JSON + markdown result files.

A benchmark measures *ratios within one run*: both sides run in the same process on the same machine, their
repetitions alternate (A B, B A, A B, ...) so slow drift (thermal, another process, page cache) falls on both
sides alike, and each number reported is a median over repetitions.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedModel

from kdkit.report.results import markdown_table as markdown_lines

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# quick and tiny runs are smoke tests; they never overwrite a real measurement
SMOKE_RESULTS = RESULTS / "smoke"

BATCH_SIZE = 32
MAX_LENGTH = 64
LABELS = ["rotten", "fresh"]
TEACHER = "minilm-l6"
STUDENT_LAYERS = [0, 2, 4]
TINY_STUDENT_LAYERS = [0, 2]


@dataclass(frozen=True)
class Options:
    """How a benchmark runs: ``quick`` = few steps/repeats (a smoke test), ``tiny`` = tiny random models and
    random token ids instead of the real offline MiniLM-L6 and Rotten Tomatoes (no assets needed)."""

    quick: bool = False
    tiny: bool = False
    device: str = "cpu"
    seed: int = 0


@dataclass
class Report:
    """A benchmark's outcome: ``results`` (the numbers) go to JSON, ``table`` rows to the markdown table."""

    name: str
    options: Options
    settings: dict[str, Any]
    results: dict[str, Any]
    table: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def machine() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "kdkit_commit": _git_commit(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(repetitions: int, sides: dict[str, Callable[[], Any]]) -> list[dict[str, Any]]:
    """Run every side once per repetition, alternating the order (A B, B A, ...), and return one dict per
    repetition: each side's result under its name and the order under ``"order"``.

    Garbage is collected before each side so one side's leftovers are not freed inside the other's timing.
    """
    names = list(sides)
    runs = []
    for rep in range(repetitions):
        order = names if rep % 2 == 0 else names[::-1]
        run: dict[str, Any] = {"order": "-".join(order)}
        for name in order:
            gc.collect()
            run[name] = sides[name]()
        runs.append(run)
    return runs


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for queued device work, so wall-clock spans cover the work they started."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


# ---- models and batches ---------------------------------------------------------------------------------------


@dataclass
class Pair:
    """A teacher, a student built from its blocks, and pre-tokenised batches both see.

    ``features`` are the unpadded examples (dicts of lists), ``batches`` the same examples collated into padded
    batches of ``BATCH_SIZE`` (the first ``len(batches) * BATCH_SIZE`` features, in order), ``collator`` the
    function that pads them, ``tokenizer`` the real tokenizer (None for tiny models on random ids).
    """

    teacher: PreTrainedModel
    student: PreTrainedModel
    features: list[dict[str, list[int]]]
    batches: list[dict[str, torch.Tensor]]
    collator: Callable[[list[dict]], dict[str, torch.Tensor]]
    tokenizer: Any
    description: dict[str, Any]


def classification_pair(options: Options, n_batches: int) -> Pair:
    """The benchmark pair: MiniLM-L6 with a fresh 2-label head → its blocks [0, 2, 4], on Rotten Tomatoes train
    batches of 32 (max_length 64); with ``options.tiny`` a 4-block random BERT → blocks [0, 2] on random ids."""
    from kdkit.students import student_from_teacher_layers
    from kdkit.tasks.classification import DataCollator

    n = n_batches * BATCH_SIZE
    torch.manual_seed(options.seed)  # the fresh classification head is the same in every run
    if options.tiny:
        teacher = tiny_classifier()
        features = random_features(n, vocab_size=teacher.config.vocab_size, seed=options.seed)
        collator, layers, source = DataCollator(pad_token_id=0), TINY_STUDENT_LAYERS, "tiny random BERT"
        tokenizer, data = None, "random token ids"
    else:
        from kdkit.tasks.classification import load_classifier
        from kdkit.tasks.classification import load_named_dataset, tokenize

        teacher, tokenizer = load_classifier(TEACHER, LABELS, key="teacher")
        train = load_named_dataset("rotten_tomatoes", seed=options.seed).splits["train"]
        tokenized = tokenize({"train": train.select(range(n))}, tokenizer, MAX_LENGTH)["train"]
        features = [{k: row[k] for k in ("input_ids", "attention_mask", "labels")} for row in tokenized]
        collator, layers, source = DataCollator(tokenizer.pad_token_id), STUDENT_LAYERS, TEACHER
        data = "rotten_tomatoes train"
    student = student_from_teacher_layers(teacher, layers)
    batches = [collator(features[i:i + BATCH_SIZE]) for i in range(0, n, BATCH_SIZE)]
    description = {"teacher": source, "student_layers": layers, "data": data, "batch_size": BATCH_SIZE,
                   "max_length": MAX_LENGTH, "n_batches": n_batches,
                   "mean_padded_length": round(sum(b["input_ids"].shape[1] for b in batches) / len(batches), 1),
                   "attention": teacher.config._attn_implementation}
    return Pair(teacher, student, features, batches, collator, tokenizer, description)


def tiny_classifier(num_labels: int = 2) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=MAX_LENGTH, num_labels=num_labels)
    return BertForSequenceClassification(config)


def random_features(n: int, vocab_size: int, seed: int, min_length: int = 4, max_length: int = MAX_LENGTH,
                    num_labels: int | None = 2) -> list[dict[str, list[int]]]:
    """``n`` unpadded examples of random token ids (never 0, the pad id) with random lengths and labels."""
    rng = random.Random(seed)
    features = []
    for _ in range(n):
        length = rng.randint(min_length, max_length)
        example = {"input_ids": [rng.randrange(1, vocab_size) for _ in range(length)], "attention_mask": [1] * length}
        if num_labels is not None:
            example["labels"] = rng.randrange(num_labels)
        features.append(example)
    return features


# ---- results ---------------------------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (machine, mode, settings, results, notes) and ``<name>.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": report.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": {"quick": report.options.quick, "tiny": report.options.tiny, "device": report.options.device},
        "machine": machine(),
        "settings": report.settings,
        "results": report.results,
        "notes": report.notes,
    }
    json_path, md_path = out_dir / f"{report.name}.json", out_dir / f"{report.name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown(report, payload["machine"], payload["created"]))
    return json_path, md_path


def markdown(report: Report, machine_info: dict[str, Any], created: str) -> str:
    options = report.options
    mode = [m for m, on in (("QUICK", options.quick), ("TINY MODELS", options.tiny)) if on]
    lines = [f"# Benchmark: {report.name}", ""]
    if mode:
        lines += [f"**{' + '.join(mode)}: a smoke run, not a measurement.**", ""]
    lines += [f"Measured {created} on {describe_machine(machine_info)}, device {options.device}.", "",
              markdown_table(report.table), ""]
    if report.notes:
        lines += [f"- {note}" for note in report.notes] + [""]
    settings = ", ".join(f"{k}={v}" for k, v in report.settings.items())
    lines += [f"Settings: {settings}", ""]
    return "\n".join(lines)


def describe_machine(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ""
    return (f"{info['cpu']} ({info['cores_usable']} of {info['cores']} cores usable, {info['torch_threads']} torch "
            f"threads){gpu}; torch {info['torch']}, transformers {info['transformers']}, "
            f"kdkit {info['kdkit_commit']}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A benchmark's rows (dicts with the same keys) as a Markdown table, drawn by kdkit's own table helper."""
    if not rows:
        return ""
    columns = list(rows[0])
    return "\n".join(markdown_lines(columns, [[_cell(row.get(c)) for c in columns] for row in rows]))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
