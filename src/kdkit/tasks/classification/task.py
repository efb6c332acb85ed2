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
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from transformers import AutoModel, AutoModelForSequenceClassification, TrainerCallback, set_seed

from kdkit import __version__
from kdkit.capture import num_layers
from kdkit.config import EvaluationConfig, Recipe, TeacherConfig
from kdkit.engine.pipeline import Prepared, TrainerTask, stored_teacher
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import CacheError, ConfigError, ModelError
from kdkit.loading import load_model, load_tokenizer, model_config
from kdkit.report.bootstrap import PER_QUERY
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.report.report import write_report
from kdkit.schema import TOKENS_MAX, Count, Fraction, Seed, Strict
from kdkit.signals.cache import fingerprint_model, fingerprint_tokenizer
from kdkit.store import ArtifactStore, digest, read_manifest
from kdkit.students import StudentContext, build_student
from kdkit.tasks import register
from kdkit.tasks.classification.augment import NO_LABEL, augment_texts
from kdkit.tasks.classification.data import (ClassificationData, DataCollator, add_training_rows,
                                             load_classification_data, load_unlabeled, preview, tokenize)
from kdkit.terms import TERMS, build_terms
from kdkit.terms.logits import CELoss
from kdkit.vocab import alignment_rate, map_ids, same_vocabulary, vocabulary_map


class AugmentConfig(Strict):
    """``data.augment``: ``copies`` (1..1000) augmented versions of each training text, labelled by the teacher
    (TinyBERT's augmentation; :mod:`kdkit.tasks.classification.augment`): each single-piece word replaced with
    probability ``replace_prob`` by one of its ``neighbours`` (1..1000) nearest words in the teacher's embedding
    space, then one span of 1..``max_span`` (1..64) words deleted with probability ``delete_prob``. Copies have no
    gold label unless ``keep_labels``; ``seed`` makes them reproducible."""

    copies: int = Field(4, ge=1, le=1000)
    replace_prob: Fraction = 0.4
    neighbours: int = Field(15, ge=1, le=1000)
    delete_prob: Fraction = 0.0
    max_span: int = Field(3, ge=1, le=64)
    keep_labels: bool = False
    seed: Seed = 0


class UnlabeledConfig(Strict):
    """``data.unlabeled``: texts without labels that the student learns from through the teacher's signals alone:
    a ``file`` (.txt one text per line, or ``text_column`` of a csv/tsv/jsonl/json file) or ``corpus: true`` (the
    named dataset's own unlabeled texts: Rotten Tomatoes' plot summaries); at most ``max_samples`` of them (drawn
    with the data seed)."""

    file: str | None = None
    text_column: str = "text"
    corpus: bool = False
    max_samples: Count | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "UnlabeledConfig":
        if (self.file is None) == (not self.corpus):
            raise ValueError("give exactly one of data.unlabeled.file or data.unlabeled.corpus: true")
        return self


class ClassificationDataConfig(Strict):
    """Where the examples come from: a named offline dataset, local csv/jsonl files, or a hub dataset name; and
    the extra training text the teacher labels (``augment``, ``unlabeled``)."""

    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, gt=0, le=TOKENS_MAX)
    max_train_samples: Count | None = None
    seed: Seed = 0
    augment: AugmentConfig | None = None
    unlabeled: UnlabeledConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ClassificationDataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (a named or hub dataset) or data.train_file")
        if self.unlabeled is not None and self.unlabeled.corpus and self.dataset is None:
            raise ValueError("data.unlabeled.corpus reads a named dataset's unlabeled texts; with data files give "
                             "data.unlabeled.file")
        return self

    def labelled_only(self) -> "ClassificationDataConfig":
        """The same data without the rows the teacher labels (augmented, unlabeled) and without the student's
        ``max_train_samples``: what the teacher is fine-tuned on."""
        return self.model_copy(update={"max_train_samples": None, "augment": None, "unlabeled": None})


DataConfig = ClassificationDataConfig  # the name earlier versions exported


class ClassificationTeacherConfig(TeacherConfig):
    """The shared teacher section, and how its fine-tuning picks its length: ``select: best`` (the default)
    evaluates the teacher on the validation split after each epoch of ``finetune``, stops once ``patience``
    (1..1000) epochs in a row have not raised the validation accuracy, and keeps the weights of the best epoch, so
    ``finetune.epochs`` is a cap; ``last`` keeps the weights of the last step. The validation curve is stored with
    the teacher and shown in each report."""

    select: Literal["best", "last"] = "best"
    patience: int = Field(1, ge=1, le=1000)


class ClassificationRecipe(Recipe):
    supports_stages = True  # the exported student loads back as a pretrained one (stage after stage)
    supports_adaptive = True  # BERT students train as DynaBERT sub-networks, exported and evaluated
    task: str = "classification"
    data: ClassificationDataConfig
    teacher: ClassificationTeacherConfig | None = None

    @model_validator(mode="after")
    def _rows_without_labels(self) -> "ClassificationRecipe":
        """Augmented and unlabeled rows are taught by the teacher: refuse a recipe without one, or with a loss that
        needs every row's gold label."""
        data = self.data
        if data.augment is None and data.unlabeled is None:
            return self
        key = "data.augment" if data.augment is not None else "data.unlabeled"
        if self.teacher is None or not any(TERMS[loss.name].reads_teacher for loss in self.losses):
            raise ValueError(f"{key} adds rows that the teacher's signals label, but the recipe has no teacher or no "
                             f"loss that reads one; add a teacher and a loss such as kd")
        unlabeled_rows = data.unlabeled is not None or not data.augment.keep_labels
        for i, loss in enumerate(self.losses):
            if unlabeled_rows and not TERMS[loss.name].unlabeled_rows:
                raise ValueError(f"losses[{i}] '{loss.name}' needs a gold label on every training row, and {key} "
                                 f"adds rows without one; drop that loss or set data.augment.keep_labels")
        return self


def load_data(cfg: ClassificationDataConfig, teacher: str | None = None) -> ClassificationData:
    """The recipe's splits; training rows as ``data.max_train_samples`` says, then the augmented copies (made with
    ``teacher``'s tokenizer and embeddings) and the unlabeled texts."""
    data = load_classification_data(cfg.dataset or cfg.train_file, train_file=cfg.train_file,
                                    validation_file=cfg.validation_file, test_file=cfg.test_file,
                                    text_column=cfg.text_column, label_column=cfg.label_column, seed=cfg.seed)
    if cfg.max_train_samples and len(data.splits["train"]) > cfg.max_train_samples:
        data.splits["train"] = data.splits["train"].shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    if cfg.augment is not None:
        _augment(data, cfg.augment, teacher)
    if cfg.unlabeled is not None:
        u = cfg.unlabeled
        texts = load_unlabeled(file=u.file, text_column=u.text_column, corpus=cfg.dataset if u.corpus else None)
        if u.max_samples and len(texts) > u.max_samples:
            rows = np.random.default_rng(cfg.seed).choice(len(texts), u.max_samples, replace=False)
            texts = [texts[i] for i in sorted(rows)]
        add_training_rows(data, texts, [NO_LABEL] * len(texts), "unlabeled")
    return data


def _augment(data: ClassificationData, cfg: AugmentConfig, teacher: str | None) -> None:
    if teacher is None:
        raise ConfigError("data.augment needs a teacher: its tokenizer and embeddings choose the replacement words")
    train = data.splits["train"]
    texts, labels = list(train["text"]), list(train["label"])
    model, tokenizer = load_model(teacher, AutoModel, "teacher.model")
    started = time.perf_counter()
    copies = augment_texts(texts, tokenizer, model.get_input_embeddings().weight.detach(), copies=cfg.copies,
                           replace_prob=cfg.replace_prob, neighbours=cfg.neighbours, delete_prob=cfg.delete_prob,
                           max_span=cfg.max_span, seed=cfg.seed)
    added = add_training_rows(data, [text for _, text in copies],
                              [labels[row] if cfg.keep_labels else NO_LABEL for row, _ in copies], "augmented")
    print(f"[kdkit] {added} augmented copies of {len(texts)} training texts in {time.perf_counter() - started:.1f} s")


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
        return load_data(recipe.data, recipe.teacher.model if recipe.teacher is not None else None)

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
        prep.extras["teacher_path"] = teacher_path
        if prep.teacher is not None and not same_vocabulary(prep.tokenizer, prep.teacher_tokenizer) \
                and recipe.needs_token_alignment():
            # token-level losses compare positions: the teacher reads the student's tokens, renumbered (kdkit.vocab)
            prep.extras["id_map"] = vocabulary_map(prep.tokenizer, prep.teacher_tokenizer)
        return prep

    def finetune_teacher(self, recipe, data) -> str:
        """Fine-tune the recipe's teacher on its training split with CE, once; return the stored folder.

        The teacher always learns from the whole labelled training split: ``data.max_train_samples`` limits the
        student's distillation data, not the teacher (a subsampled recipe reuses the full recipe's teacher), and
        the rows the teacher itself labels (``data.augment``, ``data.unlabeled``) are not its training data. With
        ``teacher.select: best`` it is scored on the validation split after each epoch and the best epoch's weights
        are kept (:class:`_BestEpoch`). The store key covers the teacher name, the data settings, the labels, the
        fine-tuning and selection settings and the kdkit version; the folder is built under a temporary name and
        renamed when complete (:class:`kdkit.store.ArtifactStore`).
        """
        cfg = recipe.teacher
        full = recipe.data.labelled_only()
        if full != recipe.data:
            data = load_data(full)
        key = digest({"model": cfg.model, "data": full.model_dump(exclude={"augment", "unlabeled"}),
                      "labels": data.label_names, "finetune": cfg.finetune.model_dump(),
                      "select": [cfg.select, cfg.patience], "kdkit": __version__})
        meta: dict = {"source": cfg.model, "key": key}

        def build(work: Path) -> None:
            set_seed(cfg.finetune.seed)
            model, tokenizer = load_classifier(cfg.model, data.label_names, key="teacher.model")
            tokenized = tokenize(data.splits, tokenizer, recipe.data.max_length)
            collator = DataCollator(tokenizer.pad_token_id)
            module = DistillationModule(model, build_terms([CELoss(name="ce")], None, model))
            args = training_arguments(cfg.finetune, work / "checkpoints", save_strategy="no")
            keep = _BestEpoch(model, lambda: evaluate_classifier(
                model, tokenized["validation"], collator, batch_size=cfg.finetune.eval_batch_size, progress=False),
                cfg.patience) if cfg.select == "best" else None
            trainer = DistillationTrainer(module, args, train_dataset=tokenized["train"], data_collator=collator,
                                          callbacks=[keep] if keep else None)
            trainer.train()
            if keep is not None:
                meta.update(keep.restore())
            else:
                model.eval()
                scores = evaluate_classifier(model, tokenized["validation"], collator,
                                             batch_size=cfg.finetune.eval_batch_size)
                meta["validation"] = {k: v for k, v in scores.items() if k != "correct"}
            trainer.export_student(work, tokenizer)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)

        return stored_teacher(f"{cfg.model}-{recipe.data.dataset or 'files'}", key, build,
                              f"fine-tuning the teacher '{cfg.model}'", meta=meta)

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
        curve = _teacher_curve(prep.extras.get("teacher_path"))
        if curve:
            results["teacher_validation"] = curve
        if prep.data.composition:  # data.augment / data.unlabeled: what the student's training rows were
            results["training_examples"] = ", ".join(f"{n} {kind}" for kind, n in prep.data.composition.items())
        # per-example correctness, so that kdkit compare gives single-seed runs paired bootstrap intervals
        out = recipe.resolved_output_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_QUERY).write_text(json.dumps({"student": {metric: dict(enumerate(values)) for metric, values
                                                             in per_example.items()}}) + "\n")
        return results

    def compare_figures(self, board, out):
        from kdkit.report.sub_networks import compare_grid_figure

        path = compare_grid_figure(board, out / "sub_networks.png")
        return [] if path is None else [("DynaBERT sub-networks, mean over seeds; each run's difference from the "
                                         "first", path)]

    def compare_tables(self, board):
        from kdkit.report.sub_networks import compare_grid_table

        table = compare_grid_table(board)
        return [] if table is None else [table]

    def evaluate_student(self, prep, model, name):
        recipe = prep.recipe
        with torch.inference_mode():
            return _model_entry(name, model, prep.tokenizer, prep.data, recipe.data.max_length, recipe.evaluation,
                                batch_size=recipe.training.eval_batch_size)


class _BestEpoch(TrainerCallback):
    """``teacher.select: best``: after each epoch, score the model on the validation split; keep a copy of the best
    epoch's weights (highest accuracy, the earliest on a tie) and stop training once ``patience`` epochs in a row
    have not beaten it."""

    def __init__(self, model, score, patience: int):
        self.model, self.score, self.patience = model, score, patience
        self.curve: list[dict] = []
        self.best: tuple[int, dict] | None = None

    def on_epoch_end(self, args, state, control, **kwargs):
        scores = self.score()
        self.curve.append({"epoch": round(state.epoch, 2), "accuracy": scores["accuracy"], "ece": scores["ece"]})
        best = max(range(len(self.curve)), key=lambda i: (self.curve[i]["accuracy"], -i))
        print(f"[kdkit] teacher after epoch {state.epoch:g}: validation accuracy {100 * scores['accuracy']:.2f}% "
              f"(best: epoch {self.curve[best]['epoch']:g})")
        if best == len(self.curve) - 1:
            self.best = (best, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        elif len(self.curve) - 1 - best >= self.patience:
            control.should_training_stop = True
        return control

    def restore(self) -> dict:
        """Load the best epoch's weights; the meta to store: the curve, the kept epoch and its scores."""
        index, weights = self.best
        self.model.load_state_dict(weights)
        self.model.eval()
        kept = self.curve[index]
        return {"curve": self.curve, "kept_epoch": kept["epoch"],
                "validation": {"accuracy": kept["accuracy"], "ece": kept["ece"]}}


def _teacher_curve(path: str | None) -> str | None:
    """The fine-tuned teacher's validation accuracy per epoch, from its store entry, for the report: ``epoch 1
    85.2%, epoch 2 86.1% (kept), epoch 3 85.9%``; None for a teacher that was not fine-tuned with a curve."""
    if not path:
        return None
    try:
        meta = read_manifest(Path(path))["meta"]
    except (CacheError, OSError):
        return None
    curve, kept = meta.get("curve"), meta.get("kept_epoch")
    if not curve:
        return None
    return "validation accuracy after each fine-tuning epoch: " + ", ".join(
        f"epoch {p['epoch']:g} {100 * p['accuracy']:.2f}%" + (" (kept)" if p["epoch"] == kept else "")
        for p in curve)


def _model_entry(name: str, model, tokenizer, data: ClassificationData, max_length: int, cfg: EvaluationConfig,
                 batch_size: int, scores: dict | None = None, per_example: dict | None = None) -> dict:
    """A model's report entry; ``per_example`` (a dict) receives its per-example ``accuracy`` (1/0). A model that
    gives every example the same class is marked ``"one_class": true`` and warned about."""
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
    entry = {"name": name, "params": count_parameters(model), "n": scores["n"],
             "metrics": {"accuracy": scores["accuracy"], "ece": scores["ece"]}, "latency": latency}
    if scores.get("top_share") == 1.0 and scores["n"] > 1 and len(data.label_names) > 1:
        entry["one_class"] = True  # collapsed: its accuracy is only the share of the class it always gives
        print(f"[kdkit] warning: {name} gives one class to all {scores['n']} examples of the {cfg.split} split "
              f"(accuracy {100 * scores['accuracy']:.2f}% is that class's share): it has collapsed", file=sys.stderr)
    return entry


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
    if teacher is not None:  # a cached or teacher-free run leaves the teacher where it was loaded: on the CPU
        teacher.to(next(student.parameters()).device)  # latency is compared on one device
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
    dataset = load_data(data.labelled_only())  # only the evaluation split is read
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
