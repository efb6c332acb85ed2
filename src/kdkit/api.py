"""The Python API: what ``kdkit distill``, ``kdkit eval`` and ``kdkit quickstart`` do, callable from code.

``distill(recipe)`` validates everything that can be checked before any file is written (recipe, data, models,
vocabularies, layer maps), then fine-tunes the teacher if the recipe asks (cached), distils the student with
:class:`~kdkit.engine.DistillationTrainer`, exports the student as a plain HF folder, evaluates teacher and student
and writes the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, set_seed

from kdkit import __version__
from kdkit.assets import MODELS, cache_dir, resolve_model
from kdkit.capture import num_layers
from kdkit.config import CELoss, DataConfig, EvaluationConfig, Recipe, load_recipe, recipe_to_yaml
from kdkit.engine import DistillationModule, DistillationTrainer, build_terms, training_arguments
from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.engine.terms import signal_spec
from kdkit.errors import CacheError, ConfigError, ModelError
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.report.environment import environment
from kdkit.report.report import write_report
from kdkit.signals import CachedTeacher, LiveTeacher, TeacherCache, build_cache, example_key
from kdkit.signals.cache import fingerprint_model, fingerprint_tokenizer, real_token_ids
from kdkit.students import student_bilstm, student_from_config, student_from_teacher_layers
from kdkit.tasks.classification import (ClassificationData, DataCollator, first_line, load_classification_data,
                                        preview, tokenize)
from kdkit.vocab import alignment_rate, map_ids, vocabulary_map

TEACHER_MARKER = "kdkit_teacher.json"


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written."""

    recipe: Recipe
    data: ClassificationData
    tokenizer: Any
    teacher_tokenizer: Any
    teacher: PreTrainedModel | None  # None: a teacher-free recipe (teacher_tokenizer is then the student's)
    student: PreTrainedModel
    module: DistillationModule
    id_map: np.ndarray | None = None  # student id -> teacher id, when token losses cross two vocabularies


def load_data(cfg: DataConfig) -> ClassificationData:
    data = load_classification_data(cfg.dataset or cfg.train_file, train_file=cfg.train_file,
                                    validation_file=cfg.validation_file, test_file=cfg.test_file,
                                    text_column=cfg.text_column, label_column=cfg.label_column, seed=cfg.seed)
    if cfg.max_train_samples and len(data.splits["train"]) > cfg.max_train_samples:
        data.splits["train"] = data.splits["train"].shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    return data


# what a saved model's files can raise when they are missing, truncated or do not match its config
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")


def _cannot_load(key: str, name: str, problem: str) -> ModelError:
    return ModelError(f"{key} '{name}' {problem}; give a named model ({', '.join(MODELS)}), a local model folder "
                      f"or a hub id")


def _model_config(name: str, key: str):
    """The folder (or hub id) and config of a named model, local folder or hub id; a one-line error naming ``key``
    when there is no model there. A name that can only be a path (absolute, ``./``, ``~``, two slashes) is not
    sent to the hub, whose complaint would be about repo id syntax."""
    path = resolve_model(name)
    local = Path(path).expanduser()
    if local.is_file():
        raise _cannot_load(key, name, "is a file, not a model folder")
    if local.is_dir() and not (local / "config.json").is_file():
        raise _cannot_load(key, name, "is a folder without config.json, so not a saved model")
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1):
        raise _cannot_load(key, name, "does not exist (no such folder)")
    try:
        return path, AutoConfig.from_pretrained(path)
    except _LOAD_ERRORS as err:
        raise _cannot_load(key, name, f"cannot be loaded ({first_line(err)})") from None


def load_classifier(name: str, label_names: list[str], *, eager: bool = False, key: str = "model"):
    """An ``AutoModelForSequenceClassification`` and its tokenizer from a named model, folder or hub id."""
    path, config = _model_config(name, key)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if is_classifier and config.num_labels != len(label_names):
        raise ModelError(f"{key} '{name}' is a classifier with {config.num_labels} labels but the data has "
                         f"{len(label_names)} ({preview(label_names)})")
    local = Path(path).expanduser()
    if local.is_dir() and not any((local / file).is_file() for file in _TOKENIZER_FILES):
        # transformers would build an empty tokenizer from the config alone and every word would become [UNK]
        raise _cannot_load(key, name, f"has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, …)")
    kwargs = {"attn_implementation": "eager"} if eager else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)}, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except _LOAD_ERRORS as err:
        problem = f"has weights or tokenizer files that cannot be loaded ({first_line(err)})"
        raise _cannot_load(key, name, problem) from None
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelError(f"{key} '{name}': its tokenizer has {len(tokenizer)} tokens but the model embeds only "
                         f"{vocab_size} (config vocab_size); the folder mixes a tokenizer and a model that do not "
                         f"belong together")
    return model, tokenizer


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetune_teacher(recipe: Recipe, data: ClassificationData) -> str:
    """Fine-tune the recipe's teacher on its training split with CE, once; return the cached folder.

    The teacher always learns from the whole training split: ``data.max_train_samples`` limits the student's
    distillation data, not the teacher (a subsampled recipe reuses the full recipe's teacher). The cache key
    covers the teacher name, the data settings, the labels, the fine-tuning settings and the kdkit version. The
    folder is built under a temporary name and renamed when complete, so an interrupted run is never mistaken
    for a finished teacher.
    """
    cfg = recipe.teacher
    full = recipe.data.model_copy(update={"max_train_samples": None})
    if recipe.data.max_train_samples:
        data = load_data(full)
    key = _hash({"model": cfg.model, "data": full.model_dump(), "labels": data.label_names,
                 "finetune": cfg.finetune.model_dump(), "kdkit": __version__})
    slug = "".join(c if c.isalnum() else "-" for c in f"{cfg.model}-{recipe.data.dataset or 'files'}")[-60:]
    final = cache_dir() / "teachers" / f"{slug}-{key}"
    if (final / TEACHER_MARKER).is_file():
        print(f"[kdkit] fine-tuned teacher found in cache: {final}")
        return str(final)
    print(f"[kdkit] fine-tuning the teacher '{cfg.model}' (cached afterwards in {final})")
    work = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
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
    dev = evaluate_classifier(model, tokenized["validation"], DataCollator(tokenizer.pad_token_id),
                              batch_size=cfg.finetune.eval_batch_size)
    (work / TEACHER_MARKER).write_text(json.dumps({"source": cfg.model, "validation": dev, "key": key}, indent=2))
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)
    return str(final)


def _same_vocabulary(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


def _student_tokenizer(name: str):
    """The tokenizer of ``student.model`` for a random-init student in a recipe without a teacher."""
    path = _model_config(name, "student.model")[0]
    try:
        return AutoTokenizer.from_pretrained(path)
    except _LOAD_ERRORS as err:
        raise _cannot_load("student.model", name, f"has no usable tokenizer ({first_line(err)})") from None


def build_student(recipe: Recipe, teacher: PreTrainedModel, teacher_tokenizer, label_names: list[str]):
    cfg = recipe.student
    if cfg.init == "teacher_layers":
        return student_from_teacher_layers(teacher, cfg.layers), teacher_tokenizer
    if cfg.init == "config":
        base = _model_config(cfg.model, "student.model")[1] if cfg.model else teacher.config
        # the teacher's config keeps its attention implementation, eager when the recipe needs attention maps
        overrides = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)},
                     **cfg.overrides}
        tokenizer = teacher_tokenizer if teacher_tokenizer is not None else _student_tokenizer(cfg.model)
        return student_from_config(base, overrides, AutoModelForSequenceClassification), tokenizer
    if cfg.init == "bilstm":
        labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
        return student_bilstm(teacher, {**labels, **cfg.overrides}), teacher_tokenizer
    return load_classifier(cfg.model, label_names, eager=recipe.needs_attentions(), key="student.model")


def _check_generated_maps(recipe: Recipe, teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """A generated layer map spreads the student's blocks over the teacher's, so it needs a student no deeper than
    the teacher; name the loss that asks for one (the map itself only knows the two depths)."""
    for i, term in enumerate(recipe.losses):
        kind = getattr(term, "layer_map", None)
        if kind in ("pairs", "last", None):
            continue
        n_teacher, n_student = num_layers(teacher), num_layers(student)
        if n_student > n_teacher:
            raise ConfigError(f"recipe key 'losses[{i}].layer_map': '{kind}' needs a student no deeper than the "
                              f"teacher, but the student has {n_student} layers and the teacher {n_teacher}; use "
                              f"layer_map 'pairs' with [teacher, student] indices or a shallower student")


def prepare(recipe: Recipe, teacher_path: str | None = None, data: ClassificationData | None = None) -> Prepared:
    """Load data and models and build the loss terms; raise a one-line error on any mismatch."""
    # built here only as a check: a bad training.extra value would otherwise surface after output_dir is written
    training_arguments(recipe.training, recipe.resolved_output_dir() / "checkpoints")
    data = data or load_data(recipe.data)
    teacher_path = teacher_path or (recipe.teacher.model if recipe.teacher else None)
    set_seed(recipe.training.seed)  # fresh heads and random-init students are reproducible from the recipe's seed
    teacher, teacher_tok = None, None
    if teacher_path is not None:
        teacher, teacher_tok = load_classifier(teacher_path, data.label_names, eager=recipe.needs_attentions(),
                                               key="teacher.model")
    student, tokenizer = build_student(recipe, teacher, teacher_tok, data.label_names)
    if teacher is None:
        teacher_tok = tokenizer
    id_map = None
    if not _same_vocabulary(tokenizer, teacher_tok) and recipe.needs_token_alignment():
        # token-level losses compare positions: the teacher reads the student's tokens, renumbered (kdkit.vocab)
        id_map = vocabulary_map(tokenizer, teacher_tok)
    _check_generated_maps(recipe, teacher, student)
    module = DistillationModule(student, build_terms(recipe.losses, teacher, student))
    return Prepared(recipe, data, tokenizer, teacher_tok, teacher, student, module, id_map)


def _tokenized(prep: Prepared):
    max_length = prep.recipe.data.max_length
    splits = tokenize(prep.data.splits, prep.tokenizer, max_length)
    if prep.id_map is not None:
        return _mapped_teacher_ids(prep, splits)
    if prep.tokenizer is not prep.teacher_tokenizer and not _same_vocabulary(prep.tokenizer, prep.teacher_tokenizer):
        teacher_view = tokenize(prep.data.splits, prep.teacher_tokenizer, max_length, prefix="teacher_")
        for name in splits:
            for column in ("teacher_input_ids", "teacher_attention_mask"):
                splits[name] = splits[name].add_column(column, teacher_view[name][column])
    return splits


def _mapped_teacher_ids(prep: Prepared, splits, sample: int = 1000):
    """Give every split ``teacher_input_ids`` = the student's ids renumbered into the teacher's vocabulary (same
    positions, same mask), and say how often that equals the teacher tokenizer's own reading of the text."""
    def renumber(batch: dict) -> dict:
        return {"teacher_input_ids": [map_ids(prep.id_map, ids, prep.tokenizer) for ids in batch["input_ids"]],
                "teacher_attention_mask": batch["attention_mask"]}

    splits = splits.map(renumber, batched=True, desc="mapping token ids onto the teacher's vocabulary")
    train = splits["train"].select(range(min(sample, len(splits["train"]))))
    own = prep.teacher_tokenizer(list(train["text"]), truncation=True, max_length=prep.recipe.data.max_length)["input_ids"]
    rate = alignment_rate(list(train["teacher_input_ids"]), own)
    print(f"[kdkit] teacher reads the student's tokens renumbered into its vocabulary; on {len(train)} training "
          f"texts the result equals the teacher tokenizer's own in {rate:.1%}")
    return splits


def carve_meta_split(prep: Prepared, splits) -> None:
    """RW-KD's meta set: ``meta_fraction`` of the tokenised training split (a permutation seeded by ``data.seed``;
    at least one example, at least one left) leaves ``splits["train"]`` and is handed to every term with a
    ``set_meta_data`` hook. Validation and test are never touched. Nothing happens without such a term."""
    terms = [t for t in prep.module.terms if hasattr(t, "set_meta_data")]
    if not terms:
        return
    train, recipe = splits["train"], prep.recipe
    fraction = max(t.cfg.meta_fraction for t in terms)
    count = max(1, round(fraction * len(train)))
    if count >= len(train):
        raise ConfigError(f"meta_fraction {fraction} of {len(train)} training examples leaves none to train on")
    order = np.random.default_rng(recipe.data.seed).permutation(len(train))
    splits["train"] = train.select(np.sort(order[count:]))
    meta = train.select(np.sort(order[:count]))
    for term in terms:
        term.set_meta_data(meta, _collator(prep), batch_size=recipe.training.batch_size, seed=recipe.data.seed,
                           learning_rate=recipe.training.learning_rate)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _collator(prep: Prepared) -> DataCollator:
    return DataCollator(prep.tokenizer.pad_token_id, teacher_pad_token_id=prep.teacher_tokenizer.pad_token_id)


def _train_keys(train) -> list[bytes]:
    return [example_key(real_token_ids(example)) for example in train]


def teacher_cache(prep: Prepared, train, *, rebuild: bool = False) -> tuple[TeacherCache | None, str]:
    """Open or build the teacher cache the recipe asks for; ``(None, reason)`` when the teacher must run live.

    ``teacher.cache: auto`` names the cache after everything it depends on (teacher weights, tokenizer, signal
    spec, the training examples' keys), so any change builds a new one and a stale cache is never read. An
    explicit directory is opened and refused if stale or missing examples, unless ``rebuild``.
    """
    recipe = prep.recipe
    mode = recipe.teacher.cache
    if mode == "off":
        return None, "teacher.cache is off"
    spec, reason = signal_spec(list(prep.module.terms), len(prep.data.label_names), top_k=recipe.teacher.cache_top_k,
                               dense_max=recipe.teacher.cache_dense_max)
    if spec is None:
        if mode != "auto":
            raise ConfigError(f"teacher.cache '{mode}': the recipe cannot use a teacher cache: {reason}")
        return None, reason
    teacher_fp, tokenizer_fp = fingerprint_model(prep.teacher), fingerprint_tokenizer(prep.teacher_tokenizer)
    keys = _train_keys(train)
    if mode == "auto":
        digest = _hash({"teacher": teacher_fp, "tokenizer": tokenizer_fp, "spec": spec.to_dict(),
                        "examples": hashlib.sha256(b"".join(sorted(set(keys)))).hexdigest()})
        path = cache_dir() / "signals" / digest
    else:
        path = Path(mode)
    with PartialState().main_process_first():  # the main rank builds; the others open what it wrote
        cache = None
        if (path / "manifest.json").is_file() and not rebuild:
            cache = TeacherCache.open(path, spec=spec, teacher_fingerprint=teacher_fp, tokenizer_fingerprint=tokenizer_fp)
            missing = sum(key not in cache for key in set(keys))
            if missing:
                raise CacheError(f"{missing} training examples are not in the teacher cache '{path}': the data "
                                 f"changed since it was built; rebuild with `kdkit cache RECIPE`")
        if cache is None:
            print(f"[kdkit] caching teacher signals ({spec.logits or 'no'} logits, hidden {list(spec.hidden_layers)}, "
                  f"pooled {list(spec.pooled_layers)}) in {path}")
            prep.teacher.to(_device())
            cache = build_cache(path, prep.teacher, train, _collator(prep), spec, tokenizer_fingerprint=tokenizer_fp,
                                batch_size=recipe.training.eval_batch_size, device=_device())
    return cache, ""


def teacher_source(prep: Prepared, train):
    """The teacher signal source for training: none when no loss reads the teacher, the cache when the recipe
    allows it, else the live teacher."""
    if not any(term.reads_teacher for term in prep.module.terms):
        return None
    cache, reason = teacher_cache(prep, train)
    if cache is not None:
        return CachedTeacher(cache)
    print(f"[kdkit] teacher runs live at every step: {reason}")
    return LiveTeacher(prep.teacher, **prep.module.teacher_needs().capture_kwargs())


def cache(recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, *, rebuild: bool = False) -> dict:
    """Build (or check) the teacher cache of a recipe: ``kdkit cache RECIPE``."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    if recipe.teacher is None:
        raise ConfigError("the recipe has no teacher, so there is no teacher cache to build")
    if recipe.teacher.cache == "off":
        raise ConfigError("teacher.cache is 'off'; set it to 'auto' or a directory to build a cache")
    prep = prepare(recipe)
    if recipe.teacher.finetune:
        prep = prepare(recipe, finetune_teacher(recipe, prep.data), prep.data)
    splits = _tokenized(prep)
    carve_meta_split(prep, splits)  # the cache covers the examples distill trains on
    train = splits["train"]
    started = time.perf_counter()
    built, reason = teacher_cache(prep, train, rebuild=rebuild)
    if built is None:
        raise ConfigError(f"the recipe cannot use a teacher cache: {reason}")
    return {"path": str(built.path), "examples": built.num_examples, "bytes": built.nbytes,
            "bytes_per_example": built.nbytes / built.num_examples, "seconds": round(time.perf_counter() - started, 3),
            "spec": built.spec.to_dict()}


def _check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if last_complete_checkpoint(out / "checkpoints") is None:
            raise ConfigError(f"--resume: output_dir '{out}' holds no complete checkpoint to resume from")
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output_dir '{out}' already holds a run; pass --resume to continue it or "
                          f"--overwrite to replace it")


def distill(recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, *, resume: bool = False,
            overwrite: bool = False) -> dict:
    """Run a recipe end to end and return the report as a dict (also written to ``output_dir``)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    if recipe.generations is not None:
        return distill_generations(recipe, resume=resume, overwrite=overwrite)
    out = recipe.resolved_output_dir()
    _check_output_dir(out, resume, overwrite)
    # every check that needs the models runs on the recipe's own teacher first, so a bad recipe fails in seconds,
    # before a long teacher fine-tuning and before anything is written
    prep = prepare(recipe)
    if recipe.teacher is not None and recipe.teacher.finetune:
        with PartialState().main_process_first():  # one rank fine-tunes, the others then read the cached result
            teacher_path = finetune_teacher(recipe, prep.data)
        prep = prepare(recipe, teacher_path, prep.data)
    else:
        teacher_path = recipe.teacher.model if recipe.teacher is not None else None
    tokenized = _tokenized(prep)
    carve_meta_split(prep, tokenized)
    for term in prep.module.terms:
        if hasattr(term, "prepare"):  # a stage on the frozen teacher before distillation (Universal-KD's probes)
            with PartialState().main_process_first():  # the main rank fits and stores; the others read it back
                term.prepare(prep.teacher, tokenized["train"], _collator(prep), device=_device())
    teacher = teacher_source(prep, tokenized["train"])

    state = PartialState()
    state.wait_for_everyone()  # every rank has passed its checks before the main rank touches output_dir
    if state.is_main_process:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        (out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    state.wait_for_everyone()
    args = training_arguments(recipe.training, out / "checkpoints")
    trainer = DistillationTrainer(prep.module, args, teacher=teacher, train_dataset=tokenized["train"],
                                  data_collator=_collator(prep))
    trainer.train(resume_from_checkpoint=True if resume else None)
    student_dir = trainer.export_student(out / "student", prep.tokenizer)
    if not state.is_main_process:  # one rank evaluates and reports; the others are done
        return {}
    (out / "metrics.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")

    report = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, prep.data,
                           recipe.data.max_length, recipe.evaluation,
                           batch_size=recipe.training.eval_batch_size, names=_names(recipe, prep.student))
    report["recipe"] = recipe.name
    report["student_dir"] = str(student_dir)
    report["teacher_source"] = teacher_path
    write_report(out, report)
    return report


def _names(recipe: Recipe, student) -> tuple[str, str]:
    teacher = "" if recipe.teacher is None else recipe.teacher.model + (" (fine-tuned)" if recipe.teacher.finetune
                                                                          else "")
    return teacher, f"{num_layers(student)}-layer student ({recipe.student.init})"


def _model_entry(name: str, model, tokenizer, data: ClassificationData, max_length: int, cfg: EvaluationConfig,
                 batch_size: int, scores: dict | None = None) -> dict:
    split = tokenize({cfg.split: data.splits[cfg.split]}, tokenizer, max_length)[cfg.split]
    collator = DataCollator(tokenizer.pad_token_id)
    model.eval()
    scores = evaluate_classifier(model, split, collator, batch_size=batch_size) if scores is None else scores
    latency = {}
    for size in cfg.latency_batch_sizes:
        batch = collator([split[i] for i in range(min(size, len(split)))])
        batch.pop("labels")
        latency[str(size)] = measure_latency(model, batch, repeats=cfg.latency_repeats)
    return {"name": name, "params": count_parameters(model), "accuracy": scores["accuracy"], "ece": scores["ece"],
            "n": scores["n"], "latency": latency}


def _teacher_entry(name: str, teacher, tokenizer, data: ClassificationData, max_length: int, cfg: EvaluationConfig,
                   batch_size: int) -> dict:
    """The teacher's evaluation. Its scores over the split (accuracy, ECE) are computed once per (teacher weights,
    tokenizer, split, settings) and read back from the kdkit cache afterwards: every run of a comparison shares
    its teacher, and a 110M-parameter teacher's pass over a test split costs most of a minute on a CPU. Its
    latency is always measured again here, so a speedup stays a ratio of two timings from one process. The entry
    says ``"cached": true`` when its scores were read back."""
    split = data.splits[cfg.split]
    key = _hash({"teacher": fingerprint_model(teacher), "tokenizer": fingerprint_tokenizer(tokenizer),
                 "split": cfg.split, "examples": hashlib.sha256("\x1f".join(map(str, split["text"])).encode()
                                                                ).hexdigest(),
                 "labels": list(split["label"]), "max_length": max_length, "batch_size": batch_size})
    path = cache_dir() / "evaluations" / f"{key}.json"
    if path.is_file():
        scores = json.loads(path.read_text())
        return {**_model_entry(name, teacher, tokenizer, data, max_length, cfg, batch_size, scores), "cached": True}
    entry = _model_entry(name, teacher, tokenizer, data, max_length, cfg, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({k: entry[k] for k in ("accuracy", "ece", "n")}))
    os.replace(tmp, path)
    return entry


def evaluate_pair(teacher, teacher_tokenizer, student, tokenizer, data: ClassificationData, max_length: int,
                  cfg: EvaluationConfig, batch_size: int = 64, names: tuple[str, str] = ("teacher", "student")
                  ) -> dict:
    """Accuracy, parameters and latency of both models on one split, and the derived ratios; without a teacher
    (``None``) the result has no ``teacher`` entry."""
    with torch.inference_mode():
        roles = {} if teacher is None else {
            "teacher": _teacher_entry(names[0], teacher, teacher_tokenizer, data, max_length, cfg, batch_size)}
        roles["student"] = _model_entry(names[1], student, tokenizer, data, max_length, cfg, batch_size)
    return {"split": cfg.split, "dm_alpha": cfg.dm_alpha, **roles, "torch_threads": torch.get_num_threads()}


def evaluate(model: str, data: DataConfig, *, teacher: str | None = None, evaluation: EvaluationConfig | None = None,
             batch_size: int = 64, output_dir: str | Path | None = None) -> dict:
    """Evaluate a saved classifier (and optionally a teacher beside it) on a dataset split."""
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


def quickstart(output_dir: str | Path | None = None, overrides: list[str] | None = None, *, resume: bool = False,
               overwrite: bool = False) -> dict:
    """The shipped quickstart recipe: MiniLM-L6 teacher → 3-layer student on Rotten Tomatoes."""
    extra = [f"output_dir={output_dir}"] if output_dir else []
    return distill("quickstart", extra + (overrides or []), resume=resume, overwrite=overwrite)



def compare(source: str | Path | dict | list, seeds: list[int] | None = None, overrides: list[str] | None = None,
            *, output_dir: str | Path | None = None, name: str | None = None, alpha: float | None = None,
            overwrite: bool = False) -> dict:
    """``kdkit compare``: every run × seed of a comparison, then the leaderboard (see :mod:`kdkit.report.leaderboard`).

    ``source`` is a comparison file or mapping (``runs``/``grid``), or a list of recipes (files, shipped names or
    mappings), one run each. ``seeds``, ``output_dir``, ``name`` and ``alpha`` replace the comparison's own;
    ``overrides`` (``key=value``) apply to every run after its own ``set``. Finished runs are reused.
    """
    from kdkit.report import leaderboard as comparing

    fields = {"output_dir": str(output_dir) if output_dir is not None else None, "name": name, "alpha": alpha}
    if isinstance(source, list):
        comparison = comparing.comparison_from_recipes(source, seeds, **fields)
    else:
        comparison = comparing.load_comparison(source)
        updates = {k: v for k, v in {**fields, "seeds": seeds}.items() if v is not None}
        if updates:
            comparison = comparing.parse_comparison({**comparison.model_dump(), **updates})
    return comparing.compare(comparison, distill, overrides=overrides, overwrite=overwrite)


def compare_document(sources: list[str | Path], document: str | Path, overrides: list[str] | None = None, *,
                     title: str = "Results", preamble: str = "", overwrite: bool = False) -> Path:
    """``kdkit compare A.yaml B.yaml --document docs/results.md``: run (or reuse) every comparison file in turn,
    then write one markdown document with a section per comparison (see
    :func:`kdkit.report.leaderboard.render_document`). Every file is validated before the first run trains."""
    from kdkit.report import leaderboard as comparing

    comparisons = [comparing.load_comparison(source) for source in sources]
    sections = [(comparison, comparing.compare(comparison, distill, overrides=overrides, overwrite=overwrite))
                for comparison in comparisons]
    return comparing.render_document(sections, Path(document), title=title, preamble=preamble)


# --- Born-again self-distillation over generations (Zhang & Sabuncu 2020; SPEC §5) ----------------------------------
# Each generation is an ordinary distillation run in <output_dir>/gen-<g>; these functions only plan the runs,
# decide which to train, resume or reuse (the rule of `kdkit compare`), and gather the per-generation table.


def generation_recipes(recipe: Recipe) -> list[Recipe]:
    """The ordinary recipe of every generation of a recipe with ``generations``.

    Generation 0 is the recipe itself (its losses and teacher, if any). Generation g ≥ 1 keeps the data, student,
    training and evaluation settings (so its fresh student is built and seeded exactly like generation 0's),
    takes generation g − 1's exported student as its teacher, and trains on (1 − α)·CE + α·soft-CE with the
    temperature on the teacher only and no T² factor. Its teacher cache follows the recipe's ``teacher.cache``
    when that is ``off``, else ``auto``: one directory could not hold the signals of several teachers, and the
    automatic cache is keyed by the teacher's weights, so each generation gets its own.
    """
    from kdkit.config import parse_recipe

    gens = recipe.generations
    out = recipe.resolved_output_dir()
    base = recipe.model_dump(mode="json", exclude={"generations"})
    teacher = recipe.teacher
    recipes = []
    for g in range(gens.count):
        data = {**base, "name": f"{recipe.name}-gen{g}", "output_dir": str(out / f"gen-{g}")}
        if g:
            data["teacher"] = {"model": str(out / f"gen-{g - 1}" / "student"),
                               "cache": "off" if teacher is not None and teacher.cache == "off" else "auto",
                               **({"cache_top_k": teacher.cache_top_k, "cache_dense_max": teacher.cache_dense_max}
                                  if teacher is not None else {})}
            data["losses"] = [{"name": "ce", "weight": 1 - gens.alpha},
                              {"name": "soft_ce", "weight": gens.alpha, "temperature": gens.temperature,
                               "temperature_on": "teacher", "t2_scaling": False}]
        recipes.append(parse_recipe(data))
    return recipes


def distill_generations(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train every generation of a born-again recipe, then write the generations table to ``output_dir``.

    A generation folder made by the same recipe with a ``report.json`` is reused, one without (interrupted) is
    resumed from its last complete checkpoint (or redone), one made by another recipe is refused unless
    ``overwrite`` (then redone): the rule of ``kdkit compare``, which may call this with ``overwrite`` for a run
    that has no top-level report yet, so ``overwrite`` never throws away a finished generation of the same recipe.
    Once a generation is trained, every later one is trained again too: its teacher changed. ``resume`` needs no
    flag here (interrupted generations always resume); it is accepted so ``--resume`` works for every recipe.
    """
    from kdkit.report.generations import write_report as write_generations_report
    from kdkit.report.leaderboard import run_state

    del resume  # see the docstring: resuming is decided per generation
    out = recipe.resolved_output_dir()
    state = PartialState()
    plan = []
    for gen_recipe in generation_recipes(recipe):
        folder = gen_recipe.resolved_output_dir()
        status = run_state(folder, recipe_to_yaml(gen_recipe))
        if status.startswith("stale") and not overwrite:
            raise ConfigError(f"generations: '{folder}' was made by a different recipe "
                              f"({status.removeprefix('stale: ')}); delete it or pass --overwrite to redo it")
        plan.append((gen_recipe, folder, status))
    if state.is_main_process:  # written first, so an interrupted run is recognised as this recipe's (kdkit compare)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    rows, reports, retrained = [], [], False
    for g, (gen_recipe, folder, status) in enumerate(plan):
        if status == "finished" and not retrained:
            report, how = json.loads((folder / "report.json").read_text()), "reused"
        else:
            resume_it = status == "interrupted" and not retrained and \
                last_complete_checkpoint(folder / "checkpoints") is not None
            how = "resumed" if resume_it else "trained"
            print(f"[kdkit] generation {g}: {'resuming' if resume_it else 'training'} in {folder}")
            report = distill(gen_recipe, resume=resume_it, overwrite=not resume_it and status != "new")
            retrained = True
        if not report:  # a non-main process of a multi-process run: the main one reports
            continue
        student = report["student"]
        rows.append({"generation": g, "status": how, "dir": str(folder), "teacher_source": report.get("teacher_source"),
                     "params": student["params"], "accuracy": student["accuracy"], "ece": student.get("ece"),
                     "gain": student["accuracy"] - (rows[0]["accuracy"] if rows else student["accuracy"]),
                     "latency": student.get("latency", {})})
        reports.append(report)
    if not state.is_main_process:
        return {}
    first, last = reports[0], reports[-1]
    results = {"recipe": recipe.name, "split": last.get("split"), "dm_alpha": last.get("dm_alpha"),
               "alpha": recipe.generations.alpha, "temperature": recipe.generations.temperature,
               "generations": rows,
               "student": {**last["student"], "name": f"generation {len(rows) - 1}: {last['student']['name']}"},
               **({"teacher": first["teacher"]} if recipe.teacher is not None else {}),
               "teacher_source": first.get("teacher_source"), "student_dir": last.get("student_dir"),
               "torch_threads": last.get("torch_threads")}
    write_generations_report(out, results)
    return results
