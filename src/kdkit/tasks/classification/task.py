"""Text classification: ``AutoModelForSequenceClassification`` teachers and students, accuracy (primary) and ECE.

The task's recipe adds its ``data`` section (:class:`ClassificationDataConfig`) to the shared ones; the pipeline
(:class:`kdkit.engine.pipeline.TrainerTask`) does the rest. Two tokenizers, one set of word pieces (MPNet teacher,
MiniLM student): when a token-level loss compares positions, the teacher reads the student's tokens renumbered
into its vocabulary (:mod:`kdkit.vocab`); otherwise it reads the text with its own tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from pydantic import Field, model_validator
from transformers import AutoModelForSequenceClassification, set_seed

from kdkit import __version__
from kdkit.capture import num_layers
from kdkit.config import EvaluationConfig, Recipe
from kdkit.engine.pipeline import Prepared, TrainerTask, stored_teacher
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import ModelError
from kdkit.loading import load_model, load_tokenizer, model_config
from kdkit.report.bootstrap import PER_QUERY
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.report.report import write_report
from kdkit.schema import TOKENS_MAX, Count, Seed, Strict
from kdkit.signals.cache import fingerprint_model, fingerprint_tokenizer
from kdkit.store import ArtifactStore, digest
from kdkit.students import StudentContext, build_student
from kdkit.tasks import register
from kdkit.tasks.classification.data import (ClassificationData, DataCollator, load_classification_data, preview,
                                             tokenize)
from kdkit.terms import build_terms
from kdkit.terms.logits import CELoss
from kdkit.vocab import alignment_rate, map_ids, same_vocabulary, vocabulary_map


class ClassificationDataConfig(Strict):
    """Where the examples come from: a named offline dataset, local csv/jsonl files, or a hub dataset name."""

    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, gt=0, le=TOKENS_MAX)
    max_train_samples: Count | None = None
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_source(self) -> "ClassificationDataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (a named or hub dataset) or data.train_file")
        return self


DataConfig = ClassificationDataConfig  # the name earlier versions exported


class ClassificationRecipe(Recipe):
    task: str = "classification"
    data: ClassificationDataConfig


def load_data(cfg: ClassificationDataConfig) -> ClassificationData:
    data = load_classification_data(cfg.dataset or cfg.train_file, train_file=cfg.train_file,
                                    validation_file=cfg.validation_file, test_file=cfg.test_file,
                                    text_column=cfg.text_column, label_column=cfg.label_column, seed=cfg.seed)
    if cfg.max_train_samples and len(data.splits["train"]) > cfg.max_train_samples:
        data.splits["train"] = data.splits["train"].shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    return data


def _head(label_names: list[str]) -> dict:
    return {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}


def load_classifier(name: str, label_names: list[str], *, eager: bool = False, key: str = "model"):
    """An ``AutoModelForSequenceClassification`` and its tokenizer from a named model, folder or hub id."""
    _, config = model_config(name, key)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if is_classifier and config.num_labels != len(label_names):
        raise ModelError(f"{key} '{name}' is a classifier with {config.num_labels} labels but the data has "
                         f"{len(label_names)} ({preview(label_names)})")
    kwargs = {"attn_implementation": "eager"} if eager else {}
    return load_model(name, AutoModelForSequenceClassification, key, num_labels=len(label_names),
                      **_head(label_names), **kwargs)


@register
class ClassificationTask(TrainerTask):
    """Single-label text classification (the task of every shipped recipe)."""

    name = "classification"
    recipe = ClassificationRecipe
    primary_metric = "accuracy"
    pipeline_tag = "text-classification"

    def load_data(self, recipe):
        return load_data(recipe.data)

    def load_teacher(self, recipe, data, path):
        return load_classifier(path, data.label_names, eager=recipe.needs_attentions(), key="teacher.model")

    supervised_loss = "ce"

    def training_texts(self, recipe, data):
        return list(data.splits["train"]["text"])

    def build_student(self, recipe, data, teacher, teacher_tokenizer):
        labels = data.label_names
        ctx = StudentContext(
            teacher=teacher, teacher_tokenizer=teacher_tokenizer, auto_class=AutoModelForSequenceClassification,
            load_pretrained=lambda name, key: load_classifier(name, labels, eager=recipe.needs_attentions(), key=key),
            load_config=model_config, load_tokenizer=load_tokenizer, head=_head(labels))
        return build_student(recipe.student, ctx)

    def prepare(self, recipe, teacher_path=None, data=None) -> Prepared:
        prep = super().prepare(recipe, teacher_path, data)
        if prep.teacher is not None and not same_vocabulary(prep.tokenizer, prep.teacher_tokenizer) \
                and recipe.needs_token_alignment():
            # token-level losses compare positions: the teacher reads the student's tokens, renumbered (kdkit.vocab)
            prep.extras["id_map"] = vocabulary_map(prep.tokenizer, prep.teacher_tokenizer)
        return prep

    def finetune_teacher(self, recipe, data) -> str:
        """Fine-tune the recipe's teacher on its training split with CE, once; return the stored folder.

        The teacher always learns from the whole training split: ``data.max_train_samples`` limits the student's
        distillation data, not the teacher (a subsampled recipe reuses the full recipe's teacher). The store key
        covers the teacher name, the data settings, the labels, the fine-tuning settings and the kdkit version; the
        folder is built under a temporary name and renamed when complete (:class:`kdkit.store.ArtifactStore`).
        """
        cfg = recipe.teacher
        full = recipe.data.model_copy(update={"max_train_samples": None})
        if recipe.data.max_train_samples:
            data = load_data(full)
        key = digest({"model": cfg.model, "data": full.model_dump(), "labels": data.label_names,
                      "finetune": cfg.finetune.model_dump(), "kdkit": __version__})
        scores = {}

        def build(work: Path) -> None:
            set_seed(cfg.finetune.seed)
            model, tokenizer = load_classifier(cfg.model, data.label_names, key="teacher.model")
            tokenized = tokenize(data.splits, tokenizer, recipe.data.max_length)
            module = DistillationModule(model, build_terms([CELoss(name="ce")], None, model))
            args = training_arguments(cfg.finetune, work / "checkpoints", save_strategy="no")
            trainer = DistillationTrainer(module, args, train_dataset=tokenized["train"],
                                          data_collator=DataCollator(tokenizer.pad_token_id))
            trainer.train()
            trainer.export_student(work, tokenizer)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)
            model.eval()
            scores.update(evaluate_classifier(model, tokenized["validation"], DataCollator(tokenizer.pad_token_id),
                                              batch_size=cfg.finetune.eval_batch_size))

        return stored_teacher(f"{cfg.model}-{recipe.data.dataset or 'files'}", key, build,
                              f"fine-tuning the teacher '{cfg.model}'",
                              meta={"source": cfg.model, "validation": scores, "key": key})

    def tokenize(self, prep):
        max_length = prep.recipe.data.max_length
        splits = tokenize(prep.data.splits, prep.tokenizer, max_length)
        if prep.teacher is None:
            return splits
        if "id_map" in prep.extras:
            return self._mapped_teacher_ids(prep, splits)
        if not same_vocabulary(prep.tokenizer, prep.teacher_tokenizer):
            teacher_view = tokenize(prep.data.splits, prep.teacher_tokenizer, max_length, prefix="teacher_")
            for name in splits:
                for column in ("teacher_input_ids", "teacher_attention_mask"):
                    splits[name] = splits[name].add_column(column, teacher_view[name][column])
        return splits

    @staticmethod
    def _mapped_teacher_ids(prep, splits, sample: int = 1000):
        """Give every split ``teacher_input_ids`` = the student's ids renumbered into the teacher's vocabulary (same
        positions, same mask), and say how often that equals the teacher tokenizer's own reading of the text."""
        id_map, tokenizer = prep.extras["id_map"], prep.tokenizer  # not prep: datasets hashes what map's function holds

        def renumber(batch: dict) -> dict:
            return {"teacher_input_ids": [map_ids(id_map, ids, tokenizer) for ids in batch["input_ids"]],
                    "teacher_attention_mask": batch["attention_mask"]}

        splits = splits.map(renumber, batched=True, desc="mapping token ids onto the teacher's vocabulary")
        train = splits["train"].select(range(min(sample, len(splits["train"]))))
        own = prep.teacher_tokenizer(list(train["text"]), truncation=True,
                                     max_length=prep.recipe.data.max_length)["input_ids"]
        rate = alignment_rate(list(train["teacher_input_ids"]), own)
        print(f"[kdkit] teacher reads the student's tokens renumbered into its vocabulary; on {len(train)} training "
              f"texts the result equals the teacher tokenizer's own in {rate:.1%}")
        return splits

    def collator(self, prep):
        return DataCollator(prep.tokenizer.pad_token_id, teacher_pad_token_id=prep.teacher_tokenizer.pad_token_id)

    def num_outputs(self, prep):
        return len(prep.data.label_names)

    def evaluate(self, prep):
        recipe = prep.recipe
        teacher = "" if recipe.teacher is None else recipe.teacher.model + (
            " (fine-tuned)" if recipe.teacher.finetune else "")
        names = (teacher, f"{num_layers(prep.student)}-layer student ({recipe.student.init})")
        per_example: dict = {}
        results = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, prep.data,
                                recipe.data.max_length, recipe.evaluation, batch_size=recipe.training.eval_batch_size,
                                names=names, per_example=per_example)
        # per-example correctness, so that kdkit compare gives single-seed runs paired bootstrap intervals
        out = recipe.resolved_output_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_QUERY).write_text(json.dumps({"student": {metric: dict(enumerate(values)) for metric, values
                                                             in per_example.items()}}) + "\n")
        return results

    def evaluate_student(self, prep, model, name):
        recipe = prep.recipe
        with torch.inference_mode():
            return _model_entry(name, model, prep.tokenizer, prep.data, recipe.data.max_length, recipe.evaluation,
                                batch_size=recipe.training.eval_batch_size)


def _model_entry(name: str, model, tokenizer, data: ClassificationData, max_length: int, cfg: EvaluationConfig,
                 batch_size: int, scores: dict | None = None, per_example: dict | None = None) -> dict:
    """A model's report entry; ``per_example`` (a dict) receives its per-example ``accuracy`` (1/0)."""
    split = tokenize({cfg.split: data.splits[cfg.split]}, tokenizer, max_length)[cfg.split]
    collator = DataCollator(tokenizer.pad_token_id)
    model.eval()
    scores = evaluate_classifier(model, split, collator, batch_size=batch_size) if scores is None else scores
    if per_example is not None:
        per_example["accuracy"] = scores["correct"]
    latency = {}
    for size in cfg.latency_batch_sizes:
        batch = collator([split[i] for i in range(min(size, len(split)))])
        batch.pop("labels")
        latency[str(size)] = measure_latency(model, batch, repeats=cfg.latency_repeats)
    return {"name": name, "params": count_parameters(model), "n": scores["n"],
            "metrics": {"accuracy": scores["accuracy"], "ece": scores["ece"]}, "latency": latency}


def _teacher_entry(name: str, teacher, tokenizer, data: ClassificationData, max_length: int, cfg: EvaluationConfig,
                   batch_size: int) -> dict:
    """The teacher's evaluation. Its scores over the split (accuracy, ECE) are computed once per (teacher weights,
    tokenizer, split, settings) and read back from the artifact store afterwards (checksummed: an edited or
    truncated value is recomputed): every run of a comparison shares its teacher, and a 110M-parameter teacher's
    pass over a test split costs most of a minute on a CPU. Its latency is always measured again here, so a
    speedup stays a ratio of two timings from one process. The entry says ``"cached": true`` when its scores were
    read back."""
    split = data.splits[cfg.split]
    key = digest({"teacher": fingerprint_model(teacher), "tokenizer": fingerprint_tokenizer(tokenizer),
                  "split": cfg.split, "examples": hashlib.sha256("\x1f".join(map(str, split["text"])).encode()
                                                                 ).hexdigest(),
                  "labels": list(split["label"]), "max_length": max_length, "batch_size": batch_size})
    store = ArtifactStore()
    scores = store.get_json("evaluations", key)
    if scores is not None:
        return {**_model_entry(name, teacher, tokenizer, data, max_length, cfg, batch_size, scores), "cached": True}
    entry = _model_entry(name, teacher, tokenizer, data, max_length, cfg, batch_size)
    store.put_json("evaluations", key, {"accuracy": entry["metrics"]["accuracy"], "ece": entry["metrics"]["ece"],
                                        "n": entry["n"]})
    return entry


def evaluate_pair(teacher, teacher_tokenizer, student, tokenizer, data: ClassificationData, max_length: int,
                  cfg: EvaluationConfig, batch_size: int = 64, names: tuple[str, str] = ("teacher", "student"),
                  per_example: dict | None = None) -> dict:
    """Accuracy, ECE, parameters and latency of both models on one split; without a teacher (``None``) the result
    has no ``teacher`` entry. ``per_example`` receives the student's per-example accuracy (see :func:`_model_entry`)."""
    with torch.inference_mode():
        roles = {} if teacher is None else {
            "teacher": _teacher_entry(names[0], teacher, teacher_tokenizer, data, max_length, cfg, batch_size)}
        roles["student"] = _model_entry(names[1], student, tokenizer, data, max_length, cfg, batch_size,
                                        per_example=per_example)
    return {"task": "classification", "primary_metric": "accuracy", "split": cfg.split, "dm_alpha": cfg.dm_alpha,
            **roles, "torch_threads": torch.get_num_threads()}


def evaluate(model: str, data: ClassificationDataConfig, *, teacher: str | None = None,
             evaluation: EvaluationConfig | None = None, batch_size: int = 64,
             output_dir: str | Path | None = None) -> dict:
    """``kdkit eval``: a saved classifier (and optionally a teacher beside it) on a dataset split."""
    evaluation = evaluation or EvaluationConfig()
    dataset = load_data(data)
    student, tokenizer = load_classifier(model, dataset.label_names, key="model")
    if teacher is None:
        with torch.inference_mode():
            return _model_entry(model, student, tokenizer, dataset, data.max_length, evaluation, batch_size)
    teacher_model, teacher_tok = load_classifier(teacher, dataset.label_names, key="teacher")
    report = evaluate_pair(teacher_model, teacher_tok, student, tokenizer, dataset, data.max_length, evaluation,
                           batch_size, names=(teacher, model))
    if output_dir is not None:
        write_report(Path(output_dir), report)
    return report
