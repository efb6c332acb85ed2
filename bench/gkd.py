"""kdkit's token-level KD step against TRL's ``GKDTrainer`` on the same pair, batches, lengths and loss.

Pair: SmolLM2-135M-Instruct (30 blocks, the ``smollm2-135m`` asset) → a copy keeping 10 of its blocks (0, 3, 6,
10, 13, 16, 19, 23, 26, 29), as the ``token_kd`` recipe; with ``--tiny`` a 4-block random Llama → blocks 0, 2 on
random ids. Data: ``bbc_summaries`` training pairs, prompts cut to 96 tokens (head + the last 4), headlines to 20
tokens with EOS; batches of 8 in the same order on every side (sequential sampling).

Loss on every side: the generalised JSD with β = 0.5 at T = 1 on the completion tokens (GKD's, Agarwal et al.
2024; kdkit's ``token_kd`` with ``divergence: jsd``; the two implementations agree on a batch to float rounding,
reported as ``loss_difference``), off-policy (TRL ``lmbda = 0``, kdkit ``on_policy = 0``): the step measured is the
distillation step itself, teacher forward, student forward and backward, optimiser. Sides:

- ``kdkit (live teacher)``: :class:`~kdkit.engine.DistillationTrainer` with the generation task's forward (logits
  only at the completion positions, ``logits_to_keep``) and the teacher run on each batch;
- ``kdkit (cached top-32)``: the same with the teacher's top-32 log-probabilities read from a cache built once
  beforehand (its build time and bytes per completion token are reported);
- ``TRL GKDTrainer``: TRL 1.x's ``trl.experimental.gkd.GKDTrainer``, batches right-padded with labels -100 outside
  the completion (its collator's convention), full-sequence logits for both models as it computes them.

Same optimiser settings (AdamW fused, lr 1e-4, weight decay 0, linear schedule, gradient clipping at 1.0), threads
and seed; no checkpoints, logging or progress bars; fp32 on both sides without gradient checkpointing (TRL's
``SFTConfig`` turns on bf16 autocast and gradient checkpointing by default; both are switched off here, since bf16
autocast on a CPU without bf16 units is an emulation that measures the CPU, not the trainer). A step is timed from the Trainer's ``on_step_begin`` to
``on_step_end``; warm-up steps are not timed; sides alternate over repetitions and each number is a median.
Throughput = real (unpadded) tokens per batch / median step time. TRL is needed for this benchmark only
(``pip install --no-deps trl``; it is not a kdkit dependency).
"""

from __future__ import annotations

import copy
import tempfile

import torch

from bench import common
from bench.overhead import StepTimer, _first

LEARNING_RATE = 1e-4
BATCH = 8
BETA = 0.5
TOP_K = 32
LAYERS = [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
TINY_LAYERS = [0, 2]
PROMPT, TAIL, COMPLETION = 96, 4, 20


def _pair(options: common.Options, n_batches: int) -> dict:
    from kdkit.students import student_from_teacher_layers
    from kdkit.tasks.generation.batches import Encoder, pad_token_id

    torch.manual_seed(options.seed)
    n = n_batches * BATCH
    if options.tiny:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0,
                             eos_token_id=1, bos_token_id=None)
        teacher, pad, eos = LlamaForCausalLM(config), 0, 1
        tokenizer = _tiny_tokenizer(config.vocab_size)
        rows = common.random_features(2 * n, vocab_size=1000, seed=options.seed, min_length=2, max_length=24,
                                      num_labels=None)
        features = [{"prompt": rows[2 * i]["input_ids"], "completion": rows[2 * i + 1]["input_ids"][:7] + [eos]}
                    for i in range(n)]
        layers, source, data = TINY_LAYERS, "tiny random Llama", "random token ids"
    else:
        from kdkit.tasks.generation import task as generation

        teacher, tokenizer = generation.load_causal_lm("smollm2-135m", "teacher")
        examples = generation.load_data(generation.GenerationDataConfig(dataset="bbc_summaries"))["train"][:n]
        columns = Encoder(tokenizer, PROMPT, TAIL, COMPLETION).rows(examples)
        features = [{"prompt": p, "completion": c} for p, c in zip(columns["prompt"], columns["completion"])]
        pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
        layers, source, data = LAYERS, "smollm2-135m", "bbc_summaries train"
    student = student_from_teacher_layers(teacher, layers)
    tokens = [len(f["prompt"]) + len(f["completion"]) for f in features]
    description = {"teacher": source, "student_layers": layers, "data": data, "batch_size": BATCH,
                   "max_prompt_length": PROMPT, "max_completion_length": COMPLETION, "n_batches": n_batches,
                   "mean_tokens_per_example": round(sum(tokens) / len(tokens), 1),
                   "mean_completion_tokens": round(sum(len(f["completion"]) for f in features) / len(features), 1),
                   "beta": BETA, "top_k": TOP_K}
    return {"teacher": teacher, "student": student, "features": features, "pad": pad, "eos": eos,
            "tokenizer": tokenizer, "description": description}


def _tiny_tokenizer(size: int):
    """A word-level tokenizer over ``size`` ids (0 pad, 1 EOS): what TRL's trainer insists on being given."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, size)}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="w2")),
                                   pad_token="<pad>", eos_token="<eos>")


def _kdkit_batches(pair: dict) -> list[dict]:
    from kdkit.tasks.generation.batches import GenerationCollator

    collate = GenerationCollator(pair["pad"])
    rows = pair["features"]
    return [collate(rows[i:i + BATCH]) for i in range(0, len(rows), BATCH)]


def _trl_batches(pair: dict) -> list[dict]:
    """The same examples as TRL's collators lay them out: prompt + completion right-padded, labels on the
    completion only."""
    batches = []
    rows = pair["features"]
    for i in range(0, len(rows), BATCH):
        chunk = rows[i:i + BATCH]
        width = max(len(r["prompt"]) + len(r["completion"]) for r in chunk)
        ids = torch.full((len(chunk), width), pair["pad"], dtype=torch.long)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for j, r in enumerate(chunk):
            sequence = r["prompt"] + r["completion"]
            ids[j, :len(sequence)] = torch.tensor(sequence)
            mask[j, :len(sequence)] = 1
            labels[j, len(r["prompt"]):len(sequence)] = torch.tensor(r["completion"])
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _arguments(tmp: str, steps: int, options: common.Options) -> dict:
    return dict(output_dir=tmp, max_steps=steps, per_device_train_batch_size=1, learning_rate=LEARNING_RATE,
                weight_decay=0.0, lr_scheduler_type="linear", seed=options.seed, save_strategy="no",
                logging_strategy="no", report_to="none", disable_tqdm=True, train_sampling_strategy="sequential",
                optim="adamw_torch_fused", max_grad_norm=1.0, dataloader_num_workers=0, dataloader_pin_memory=False,
                use_cpu=options.device == "cpu", remove_unused_columns=False)


def _build_cache(pair: dict, folder, options: common.Options):
    from kdkit.signals import SignalSpec, build_cache
    from kdkit.tasks.generation.batches import GenerationCollator, model_inputs

    def forward(capture, batch):
        return capture(**model_inputs(batch))

    rows = []  # as Encoder.rows lays them out
    for f in pair["features"]:
        sequence = f["prompt"] + f["completion"]
        rows.append({**f, "input_ids": sequence, "attention_mask": [1] * len(sequence),
                     "signal_mask": [0] * (len(f["prompt"]) - 1) + [1] * len(f["completion"]) + [0]})
    spec = SignalSpec(logits="topk", top_k=TOP_K, dtype="float16")
    return build_cache(folder, pair["teacher"], rows, GenerationCollator(pair["pad"]), spec,
                       tokenizer_fingerprint="bench", batch_size=BATCH,
                       device=options.device, progress=False, forward=forward)


def kdkit_side(pair: dict, batches: list[dict], steps: int, options: common.Options, cache=None) -> dict:
    from kdkit.engine import DistillationModule, DistillationTrainer, DistillationArguments
    from kdkit.signals import CachedTeacher, LiveTeacher
    from kdkit.tasks.generation.batches import model_inputs
    from kdkit.terms import build_terms
    from kdkit.terms.token import TokenKDLoss

    def forward(capture, batch):
        return capture(**model_inputs(batch))

    teacher, student = copy.deepcopy(pair["teacher"]), copy.deepcopy(pair["student"])
    terms = build_terms([TokenKDLoss(name="token_kd", divergence="jsd", beta=BETA)], teacher, student)
    module = DistillationModule(student, terms, forward=forward)
    source = CachedTeacher(cache, expand_topk=False) if cache is not None else LiveTeacher(teacher, forward)
    timer = StepTimer(options.device, options.seed)
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-") as tmp:
        args = DistillationArguments(**_arguments(tmp, steps, options))
        trainer = DistillationTrainer(module, args, teacher=source, train_dataset=batches[:steps],
                                      data_collator=_first, callbacks=[timer])
        trainer.train()
    return {"times": timer.times}


def trl_side(pair: dict, batches: list[dict], steps: int, options: common.Options) -> dict:
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    teacher, student = copy.deepcopy(pair["teacher"]), copy.deepcopy(pair["student"])
    timer = StepTimer(options.device, options.seed)
    rows = Dataset.from_list([{"batch": i} for i in range(steps)])

    def collate(items: list[dict]) -> dict:
        return batches[items[0]["batch"]]

    with tempfile.TemporaryDirectory(prefix="kdkit-bench-") as tmp:
        args = GKDConfig(**_arguments(tmp, steps, options), lmbda=0.0, beta=BETA, temperature=1.0,
                         max_new_tokens=COMPLETION, disable_dropout=True, bf16=False, fp16=False,
                         gradient_checkpointing=False)
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, data_collator=collate,
                             train_dataset=rows, processing_class=pair["tokenizer"],
                             callbacks=[timer])
        trainer.train()
    return {"times": timer.times}


def loss_difference(pair: dict, kd_batch: dict, trl_batch: dict) -> float:
    """|kdkit's token_kd − TRL's generalized_jsd_loss| on one batch, same models (the same math check)."""
    from trl.experimental.gkd import GKDTrainer

    from kdkit.capture import Representations
    from kdkit.tasks.generation.batches import model_inputs
    from kdkit.terms.token import TokenKDLoss, TokenKDTerm

    teacher, student = pair["teacher"].eval(), pair["student"].eval()
    with torch.no_grad():
        term = TokenKDTerm(TokenKDLoss(name="token_kd", divergence="jsd", beta=BETA))
        ours = term(Representations(logits=student(**model_inputs(kd_batch)).logits),
                    Representations(logits=teacher(**model_inputs(kd_batch)).logits), kd_batch)
        inputs = {"input_ids": trl_batch["input_ids"], "attention_mask": trl_batch["attention_mask"]}
        theirs = GKDTrainer.generalized_jsd_loss(student(**inputs).logits[:, :-1], teacher(**inputs).logits[:, :-1],
                                                 labels=trl_batch["labels"][:, 1:], beta=BETA)
    return abs(float(ours) - float(theirs))


def run(options: common.Options) -> common.Report:
    import time

    import trl

    warmup, timed, repetitions = (1, 2, 2) if options.quick else (1, 5, 3)
    steps = warmup + timed
    pair = _pair(options, n_batches=steps)
    kd_batches, trl_batches = _kdkit_batches(pair), _trl_batches(pair)
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-cache-") as tmp:
        started = time.perf_counter()
        cache = _build_cache(pair, f"{tmp}/cache", options)
        build_s = time.perf_counter() - started
        runs = common.interleaved(repetitions, {
            "kdkit_live": lambda: kdkit_side(pair, kd_batches, steps, options),
            "kdkit_cached": lambda: kdkit_side(pair, kd_batches, steps, options, cache=cache),
            "trl": lambda: trl_side(pair, trl_batches, steps, options)})
        completion_tokens = cache.manifest["num_tokens"]
        bytes_per_token = cache.nbytes / completion_tokens
    step = {side: common.median([common.median(r[side]["times"][warmup:]) for r in runs])
            for side in ("kdkit_live", "kdkit_cached", "trl")}
    tokens = common.median([float(b["attention_mask"].sum()) for b in kd_batches[warmup:]])
    results = {
        "step_s": step,
        "tokens_per_s": {side: tokens / seconds for side, seconds in step.items()},
        "speedup_vs_trl": {side: step["trl"] / step[side] for side in ("kdkit_live", "kdkit_cached")},
        "per_repetition": [{side: common.median(r[side]["times"][warmup:]) for side in step} | {"order": r["order"]}
                           for r in runs],
        "cache": {"build_s": build_s, "bytes_per_completion_token": bytes_per_token,
                  "completion_tokens": completion_tokens},
        "loss_difference": loss_difference(pair, kd_batches[0], trl_batches[0]),
        "trl_version": trl.__version__,
    }
    settings = {**pair["description"], "warmup_steps": warmup, "timed_steps": timed, "repetitions": repetitions,
                "learning_rate": LEARNING_RATE, "optimizer": "AdamW fused", "seed": options.seed}
    names = {"kdkit_live": "kdkit, live teacher", "kdkit_cached": f"kdkit, cached top-{TOP_K} teacher",
             "trl": f"TRL {trl.__version__} GKDTrainer"}
    table = [{"side": names[side], "median step (ms)": step[side] * 1e3,
              "tokens/s": results["tokens_per_s"][side],
              "speedup vs TRL": f"{step['trl'] / step[side]:.2f}x"} for side in step]
    notes = [f"Medians over {repetitions} interleaved repetitions of {timed} timed steps after {warmup} warm-up "
             f"steps (batch {BATCH}, {tokens:.0f} real tokens per batch at the median).",
             f"Teacher cache: built in {build_s:.1f} s, {bytes_per_token:.0f} bytes per completion token "
             f"(top-{TOP_K} fp16 log-probabilities, uint16 ids, tail mass).",
             f"Same loss check: |kdkit − TRL| generalised JSD on the first batch = {results['loss_difference']:.2e}."]
    return common.Report("gkd", options, settings, results, table, notes)
