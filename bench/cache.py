"""What the teacher costs per epoch: cached teacher vs. live teacher vs. student-only fine-tuning.

Three ways to train the same student for one epoch over the same examples (Rotten Tomatoes train, batches of 32,
shuffled with the same seed): ``student_only`` (CE, no teacher at all: the floor), ``live`` (CE + KD with the
teacher run at every step) and ``cached`` (CE + KD with the teacher's logits read from a
:mod:`kdkit.signals.cache` built once beforehand). Each epoch is a full ``DistillationTrainer.train()`` (data
loading, forward, backward, optimizer), timed from ``on_train_begin`` to ``on_train_end``; the three sides are
interleaved per repetition. The one-off cache build is timed separately and reported in epochs of the cached run,
so its cost can be weighed against the number of epochs trained.
"""

from __future__ import annotations

import copy
import tempfile
import time

from transformers import TrainerCallback

from bench import common

TEMPERATURE = 2.0
TARGET_RATIO = 1.05


class EpochTimer(TrainerCallback):
    def __init__(self):
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self._start


def _epoch(pair: common.Pair, teacher_source, with_kd: bool, options: common.Options) -> float:
    from kdkit.config import TrainConfig
    from kdkit.terms.logits import CELoss, KDLoss
    from kdkit.engine import DistillationModule, DistillationTrainer, training_arguments
    from kdkit.terms import build_terms

    student = copy.deepcopy(pair.student)
    configs = [CELoss(name="ce", weight=0.5)] + ([KDLoss(name="kd", weight=0.5, temperature=TEMPERATURE)]
                                                 if with_kd else [])
    module = DistillationModule(student, build_terms(configs, pair.teacher, student))
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-") as tmp:
        args = training_arguments(TrainConfig(epochs=1, batch_size=common.BATCH_SIZE, seed=options.seed), tmp,
                                  save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                  use_cpu=options.device == "cpu")
        trainer = DistillationTrainer(module, args, teacher=teacher_source, train_dataset=pair.features,
                                      data_collator=pair.collator, callbacks=[timer])
        trainer.train()
    return timer.seconds


def run(options: common.Options) -> common.Report:
    from kdkit.signals import CachedTeacher, LiveTeacher, SignalSpec, build_cache

    n_batches, repetitions = (3, 2) if options.quick else (40, 5)
    pair = common.classification_pair(options, n_batches=n_batches)
    teacher = pair.teacher.eval().requires_grad_(False)
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-cache-") as tmp:
        start = time.perf_counter()
        cache = build_cache(f"{tmp}/cache", teacher, pair.features, pair.collator,
                            SignalSpec(logits="dense", dtype="float32"), tokenizer_fingerprint="bench",
                            device=options.device, progress=False)
        build_s = time.perf_counter() - start
        live, cached = LiveTeacher(teacher), CachedTeacher(cache)
        runs = common.interleaved(repetitions, {
            "student_only": lambda: _epoch(pair, None, False, options),
            "live": lambda: _epoch(pair, live, True, options),
            "cached": lambda: _epoch(pair, cached, True, options),
        })
        cache_bytes = cache.nbytes
    epoch = {side: common.median([r[side] for r in runs]) for side in ("student_only", "live", "cached")}
    cached_ratio = common.median([r["cached"] / r["student_only"] for r in runs])
    results = {
        "epoch_s": epoch,
        "cached_over_student_only": cached_ratio,
        "live_over_student_only": common.median([r["live"] / r["student_only"] for r in runs]),
        "live_over_cached": common.median([r["live"] / r["cached"] for r in runs]),
        "cache_build_s": build_s,
        "cache_build_in_cached_epochs": build_s / epoch["cached"],
        "break_even_epochs": build_s / max(epoch["live"] - epoch["cached"], 1e-9),
        "cache_bytes": cache_bytes,
        "target_ratio": TARGET_RATIO,
        "meets_target": cached_ratio <= TARGET_RATIO,
        "repetitions": runs,
    }
    settings = {**pair.description, "examples": len(pair.features), "repetitions": repetitions,
                "temperature": TEMPERATURE, "seed": options.seed}
    table = [{"run": "student-only fine-tuning (CE)", "epoch (s)": epoch["student_only"], "× student-only": 1.0},
             {"run": "KD, cached teacher", "epoch (s)": epoch["cached"], "× student-only": cached_ratio},
             {"run": "KD, live teacher", "epoch (s)": epoch["live"],
              "× student-only": results["live_over_student_only"]},
             {"run": "cache build (once)", "epoch (s)": build_s,
              "× student-only": build_s / epoch["student_only"]}]
    notes = [f"Medians over {repetitions} interleaved repetitions of one epoch of {len(pair.features)} examples; "
             f"ratios are medians of per-repetition ratios. Target: cached ≤ {TARGET_RATIO}× student-only.",
             f"The one-off cache build takes {build_s:.1f} s ({results['cache_build_in_cached_epochs']:.2f} cached "
             f"epochs); each cached epoch saves {epoch['live'] - epoch['cached']:.1f} s over a live one, so the "
             f"build is paid back after {results['break_even_epochs']:.2f} epochs."]
    return common.Report("cache", options, settings, results, table, notes)
