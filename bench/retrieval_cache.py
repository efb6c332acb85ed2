"""What the late-interaction teacher costs per training step: TCT with cached token vectors vs the live teacher.

The retrieval task's TCT run (MiniLM-L6 MaxSim teacher → MiniLM-L6 bi-encoder on ``bbc_headlines``, passages cut
at 128 word pieces, batches of 32 queries with their positives and BM25 negatives: 64 passages) trains a few
optimiser steps twice per repetition from the same student: once scoring each batch by MaxSim over the teacher's
token vectors read from the cache (built once beforehand, over the whole corpus and every query), once running
the teacher on the batch's 96 texts. A side is timed from the Trainer's ``on_train_begin`` to ``on_train_end``
(data loading, both models, backward, optimizer) and divided by its steps; sides alternate per repetition. The
cache build is timed separately. ``--tiny``: the tiny random BERT and 60 generated pairs instead.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

from bench import common
from bench.cache import EpochTimer


def _recipe(options: common.Options, folder: Path, steps: int) -> dict:
    training = {"max_steps": steps, "batch_size": 8 if options.tiny else 32, "learning_rate": 2e-5,
                "seed": options.seed}
    if options.tiny:
        import sys

        sys.path.insert(0, str(common.ROOT / "tests"))
        from tiny import make_tiny_pairs, make_tiny_teacher

        teacher = str(make_tiny_teacher(folder / "teacher"))
        return {"task": "retrieval", "data": {"train_file": str(make_tiny_pairs(folder / "pairs.jsonl")),
                                              "max_length": 24, "query_max_length": 8},
                "teacher": {"model": teacher}, "student": {"init": "teacher_layers", "layers": [0, 2]},
                "losses": [{"name": "tct"}], "training": training}
    return {"task": "retrieval", "data": {"dataset": "bbc_headlines", "max_length": 128,
                                          "max_train_samples": 32 * steps},
            "teacher": {"model": common.TEACHER}, "student": {"init": "pretrained", "model": common.TEACHER},
            "losses": [{"name": "tct"}], "training": training}


def _steps(prep, task, recipe, train, source, steps: int, options: common.Options, folder: Path) -> float:
    from kdkit.engine import DistillationModule, DistillationTrainer, training_arguments
    from kdkit.terms import build_terms

    student = copy.deepcopy(prep.student)
    module = DistillationModule(student, build_terms(recipe.losses, prep.teacher, student),
                                forward=task.module_forward(recipe))
    timer = EpochTimer()
    args = training_arguments(recipe.training, folder / "checkpoints", save_strategy="no", logging_strategy="no",
                              disable_tqdm=True, use_cpu=options.device == "cpu")
    trainer = DistillationTrainer(module, args, teacher=source, train_dataset=train,
                                  data_collator=task.collator(prep), callbacks=[timer])
    trainer.train()
    return timer.seconds / steps


def run(options: common.Options) -> common.Report:
    from kdkit.config import parse_recipe
    from kdkit.engine.pipeline import teacher_cache
    from kdkit.tasks import get_task

    steps, repetitions = (2, 2) if options.quick else (5, 3)
    previous = os.environ.get("KDKIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-retrieval-") as tmp:
        folder = Path(tmp)
        os.environ["KDKIT_CACHE"] = str(folder / "store")  # a fresh cache: the build is part of the measurement
        try:
            recipe = parse_recipe(_recipe(options, folder, steps))
            task = get_task("retrieval")
            prep = task.prepare(recipe)
            train = task.tokenize(prep)["train"]
            start = time.perf_counter()
            cache, _ = teacher_cache(task, prep, train)
            build_s = time.perf_counter() - start
            sources = {"cached": task.signal_source(prep, cache), "live": task.signal_source(prep, None)}
            runs = common.interleaved(repetitions, {
                side: (lambda source=source: _steps(prep, task, recipe, train, source, steps, options, folder))
                for side, source in sources.items()})
            texts, cache_bytes = cache.num_examples, cache.nbytes
        finally:
            if previous is None:
                os.environ.pop("KDKIT_CACHE", None)
            else:
                os.environ["KDKIT_CACHE"] = previous
    step = {side: common.median([r[side] for r in runs]) for side in sources}
    ratio = common.median([r["live"] / r["cached"] for r in runs])
    results = {"step_s": step, "live_over_cached": ratio, "cache_build_s": build_s, "cache_texts": texts,
               "cache_bytes": cache_bytes, "break_even_steps": build_s / max(step["live"] - step["cached"], 1e-9),
               "repetitions": runs}
    settings = {"teacher": recipe.teacher.model, "student": recipe.student.model or "tiny layers [0, 2]",
                "data": recipe.data.dataset or "tiny pairs", "max_length": recipe.data.max_length,
                "batch_size": recipe.training.batch_size, "steps": steps, "repetitions": repetitions,
                "seed": options.seed}
    table = [{"run": "TCT, cached teacher vectors", "step (s)": step["cached"], "× cached": 1.0},
             {"run": "TCT, live teacher", "step (s)": step["live"], "× cached": ratio},
             {"run": f"cache build (once, {texts} texts)", "step (s)": build_s, "× cached": build_s / step["cached"]}]
    notes = [f"Medians over {repetitions} interleaved repetitions of {steps} optimiser steps; the ratio is the median "
             f"of per-repetition ratios.",
             f"The cache build ({build_s:.1f} s, {cache_bytes / 1e6:.0f} MB) is paid back after "
             f"{results['break_even_steps']:.0f} steps; it also serves the teacher's evaluation."]
    return common.Report("retrieval_cache", options, settings, results, table, notes)
