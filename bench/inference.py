"""Teacher vs student forward latency at batch 1 and 32, and how much of the FLOP saving becomes speed.

Latency is :func:`kdkit.report.evaluate.measure_latency` (median of timed forwards after warm-up, eval mode,
inference mode), teacher and student measured alternately in every repetition. FLOPs of one forward on the same
batch are counted with ``torch.utils.flop_counter.FlopCounterMode`` on an eager-attention copy of each model (the
counter has no formula for the CPU SDPA kernel, so under SDPA the attention products would go uncounted).
``speedup / flop_ratio`` is 1 when wall time scales with FLOPs; below 1, the student's time is dominated by what
FLOPs do not count (embeddings, layer norms, framework overhead per layer).
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import common

BATCH_SIZES = (1, common.BATCH_SIZE)


def forward_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward pass of ``model`` on ``batch`` (eager attention, so attention matmuls count)."""
    eager = copy.deepcopy(model).eval()
    eager.set_attn_implementation("eager")
    device = next(eager.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        eager(**inputs)
    return counter.get_total_flops()


def run(options: common.Options) -> common.Report:
    from kdkit.report.evaluate import count_parameters, measure_latency

    repetitions, repeats, warmup = (2, 2, 1) if options.quick else (5, 20, 3)
    pair = common.classification_pair(options, n_batches=1)
    models = {"teacher": pair.teacher.to(options.device).eval(), "student": pair.student.to(options.device).eval()}
    batches = {size: pair.collator(pair.features[:size]) for size in BATCH_SIZES}

    per_size, table = {}, []
    for size, batch in batches.items():
        runs = common.interleaved(repetitions, {
            name: (lambda m=model: measure_latency(m, batch, repeats=repeats, warmup=warmup))
            for name, model in models.items()})
        teacher_s = common.median([r["teacher"]["median_s"] for r in runs])
        student_s = common.median([r["student"]["median_s"] for r in runs])
        speedup = common.median([r["teacher"]["median_s"] / r["student"]["median_s"] for r in runs])
        flops = {name: forward_flops(model, batch) for name, model in models.items()}
        flop_ratio = flops["teacher"] / flops["student"]
        per_size[str(size)] = {
            "seq_len": batch["input_ids"].shape[1],
            "teacher_s": teacher_s,
            "student_s": student_s,
            "teacher_p90_s": common.median([r["teacher"]["p90_s"] for r in runs]),
            "student_p90_s": common.median([r["student"]["p90_s"] for r in runs]),
            "speedup": speedup,
            "speedup_of_medians": teacher_s / student_s,
            "teacher_flops": flops["teacher"],
            "student_flops": flops["student"],
            "flop_ratio": flop_ratio,
            "speedup_over_flop_ratio": speedup / flop_ratio,
            "repetitions": [{"order": r["order"], "teacher_s": r["teacher"]["median_s"],
                             "student_s": r["student"]["median_s"]} for r in runs],
        }
        table.append({"batch": size, "seq len": batch["input_ids"].shape[1], "teacher (ms)": teacher_s * 1e3,
                      "student (ms)": student_s * 1e3, "speedup": speedup, "teacher GFLOP": flops["teacher"] / 1e9,
                      "student GFLOP": flops["student"] / 1e9, "FLOP ratio": flop_ratio,
                      "speedup / FLOP ratio": speedup / flop_ratio})
    results = {"params": {name: count_parameters(model) for name, model in models.items()}, "batches": per_size}
    settings = {**pair.description, "batch_sizes": list(BATCH_SIZES), "repetitions": repetitions,
                "timed_forwards": repeats, "warmup_forwards": warmup}
    notes = [f"Latency: medians over {repetitions} interleaved repetitions, each the median of {repeats} forwards "
             f"after {warmup} warm-up ones; speedup is the median of per-repetition teacher/student ratios.",
             "Batch 1 is the first training example unpadded; batch 32 the first 32, padded to the longest.",
             f"Parameters: teacher {results['params']['teacher']:,}, student {results['params']['student']:,} "
             f"(embeddings included; they cost memory, almost no FLOPs)."]
    return common.Report("inference", options, settings, results, table, notes)
