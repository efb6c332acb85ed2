"""kdkit's distillation step against a hand-written PyTorch loop doing the same math.

kdkit side: :class:`~kdkit.engine.DistillationTrainer` on a :class:`~kdkit.engine.DistillationModule` with the terms
``ce`` (weight 0.5) and ``kd`` (weight 0.5, T = 2) and a :class:`~kdkit.signals.LiveTeacher`, its arguments built by
:func:`~kdkit.engine.training_arguments` as a recipe would. Hand side: teacher forward (eval, no_grad), student
forward, ``0.5·CE + 0.5·T²·KL``, backward, and what the Trainer does by default after it: gradient clipping at
1.0, a fused AdamW step (weight decay on matrices only, as the Trainer groups parameters), a linear learning-rate
schedule step, zero_grad.

Both sides get fresh deep copies of the same models, the same pre-collated batches in the same order through a
``DataLoader(batch_size=1)`` over the batch list, the same threads and seed; checkpoints, logging and progress bars
are off. A step is timed from the Trainer's ``on_step_begin`` to its ``on_step_end`` (the batch already fetched and
on the device, up to after zero_grad), and the same span in the loop. Warm-up steps are not timed. The global RNG is re-seeded
before step 0 on both sides, so dropout masks agree and the two trained students must come out equal: their
largest parameter difference is reported as a check that both sides did the same arithmetic.
"""

from __future__ import annotations

import copy
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from bench import common

LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01
BETAS = (0.9, 0.999)
EPS = 1e-8
MAX_GRAD_NORM = 1.0
TEMPERATURE = 2.0
CE_WEIGHT = KD_WEIGHT = 0.5
TARGET_RATIO = 1.02


def _first(items: list) -> dict:
    """Collate for a dataset whose items are already batches."""
    return items[0]


class StepTimer(TrainerCallback):
    """Seconds from ``on_step_begin`` to ``on_step_end`` of every optimizer step; re-seeds before step 0."""

    def __init__(self, device: str, seed: int):
        self.sync = common.synchronizer(device)
        self.seed = seed
        self.times: list[float] = []
        self.threads: set[int] = set()
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            torch.manual_seed(self.seed)
        self.threads.add(torch.get_num_threads())
        self.sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        self.times.append(time.perf_counter() - self._start)


def kdkit_side(pair: common.Pair, steps: int, options: common.Options) -> dict:
    from kdkit.config import TrainConfig
    from kdkit.terms.logits import CELoss, KDLoss
    from kdkit.engine import DistillationModule, DistillationTrainer, training_arguments
    from kdkit.terms import build_terms
    from kdkit.signals import LiveTeacher

    teacher, student = copy.deepcopy(pair.teacher), copy.deepcopy(pair.student)
    terms = build_terms([CELoss(name="ce", weight=CE_WEIGHT),
                         KDLoss(name="kd", weight=KD_WEIGHT, temperature=TEMPERATURE)], teacher, student)
    module = DistillationModule(student, terms)
    timer = StepTimer(options.device, options.seed)
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-") as tmp:
        # batch_size 1: each dataset item is one pre-collated batch of common.BATCH_SIZE
        config = TrainConfig(max_steps=steps, batch_size=1, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                             seed=options.seed)
        args = training_arguments(config, tmp, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                  train_sampling_strategy="sequential", optim="adamw_torch_fused",
                                  adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
                                  max_grad_norm=MAX_GRAD_NORM, dataloader_num_workers=0,
                                  dataloader_pin_memory=False, use_cpu=options.device == "cpu")
        teacher_source = LiveTeacher(teacher, **module.teacher_needs().capture_kwargs())
        trainer = DistillationTrainer(module, args, teacher=teacher_source, train_dataset=pair.batches[:steps],
                                      data_collator=_first, callbacks=[timer])
        trainer.train()
    return {"times": timer.times, "student": student, "threads": sorted(timer.threads)}


def hand_side(pair: common.Pair, steps: int, options: common.Options) -> dict:
    device, sync = torch.device(options.device), common.synchronizer(options.device)
    teacher = copy.deepcopy(pair.teacher).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(pair.student).to(device).train()
    params = list(student.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=BETAS, eps=EPS, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
    loader = DataLoader(pair.batches[:steps], batch_size=1, shuffle=False, num_workers=0, collate_fn=_first)
    times, threads = [], set()
    for step, batch in enumerate(loader):
        if step == 0:
            torch.manual_seed(options.seed)
        threads.add(torch.get_num_threads())
        # the Trainer's dataloader (accelerate) moves each batch to the device before on_step_begin
        batch = {k: v.to(device) for k, v in batch.items()}
        sync()
        start = time.perf_counter()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        student_logits = student(**inputs).logits
        ce = F.cross_entropy(student_logits, batch["labels"])
        kd = F.kl_div(F.log_softmax(student_logits / TEMPERATURE, dim=-1),
                      F.log_softmax(teacher_logits / TEMPERATURE, dim=-1),
                      reduction="batchmean", log_target=True) * TEMPERATURE**2
        loss = CE_WEIGHT * ce + KD_WEIGHT * kd
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        sync()
        times.append(time.perf_counter() - start)
    return {"times": times, "student": student, "threads": sorted(threads)}


def _max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x.detach().float() - y.detach().float()).abs().max().item()
               for x, y in zip(a.parameters(), b.parameters()))


def run(options: common.Options) -> common.Report:
    warmup, timed, repetitions = (1, 2, 2) if options.quick else (3, 20, 7)
    steps = warmup + timed
    pair = common.classification_pair(options, n_batches=steps)
    runs = common.interleaved(repetitions, {"kdkit": lambda: kdkit_side(pair, steps, options),
                                            "hand": lambda: hand_side(pair, steps, options)})

    per_rep = []
    for run_ in runs:
        kd_times, hand_times = run_["kdkit"]["times"][warmup:], run_["hand"]["times"][warmup:]
        per_rep.append({
            "order": run_["order"],
            "kdkit_step_s": common.median(kd_times),
            "hand_step_s": common.median(hand_times),
            "ratio": common.median(kd_times) / common.median(hand_times),
            "max_param_diff": _max_param_diff(run_["kdkit"]["student"], run_["hand"]["student"]),
            "kdkit_times_s": kd_times,
            "hand_times_s": hand_times,
        })
    ratios = [r["ratio"] for r in per_rep]
    all_kd = [t for r in per_rep for t in r["kdkit_times_s"]]
    all_hand = [t for r in per_rep for t in r["hand_times_s"]]
    ratio = common.median(ratios)
    results = {
        "kdkit_step_s": common.median([r["kdkit_step_s"] for r in per_rep]),
        "hand_step_s": common.median([r["hand_step_s"] for r in per_rep]),
        "ratio": ratio,
        "ratio_pooled": common.median(all_kd) / common.median(all_hand),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "max_param_diff": max(r["max_param_diff"] for r in per_rep),
        "threads": {"kdkit": sorted({t for r in runs for t in r["kdkit"]["threads"]}),
                    "hand": sorted({t for r in runs for t in r["hand"]["threads"]})},
        "repetitions": per_rep,
    }
    settings = {**pair.description, "warmup_steps": warmup, "timed_steps": timed, "repetitions": repetitions,
                "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
                "temperature": TEMPERATURE, "ce_weight": CE_WEIGHT, "kd_weight": KD_WEIGHT,
                "optimizer": "AdamW fused", "lr_schedule": "linear", "seed": options.seed}
    table = [{"side": "kdkit (DistillationTrainer)", "median step (ms)": results["kdkit_step_s"] * 1e3},
             {"side": "hand-written loop", "median step (ms)": results["hand_step_s"] * 1e3},
             {"side": f"ratio kdkit/hand (target ≤ {TARGET_RATIO})",
              "median step (ms)": f"{ratio:.4f} (per repetition {min(ratios):.4f}..{max(ratios):.4f})"}]
    notes = [f"Medians over {repetitions} interleaved repetitions of {timed} timed steps after {warmup} warm-up "
             f"steps; the ratio is the median of the per-repetition ratios.",
             f"Largest parameter difference between the two trained students: {results['max_param_diff']:.3g} "
             f"(0 up to float rounding means both sides computed the same updates)."]
    return common.Report("overhead", options, settings, results, table, notes)
