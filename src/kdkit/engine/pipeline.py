"""The task-agnostic pipeline: load → build teacher/student → teacher signals → train → export → evaluate → report.

A :class:`Task` is what a recipe's ``task:`` names: its typed recipe, its primary metric and one entry point,
:meth:`Task.run`. Tasks that train with ``transformers.Trainer`` subclass :class:`TrainerTask` and fill in the
hooks below (data, models, tokenisation, collator, forward, evaluation); :meth:`TrainerTask.run` is this module's
pipeline. Tasks with a loop of their own (dataset or policy distillation) implement ``run`` and reuse the losses,
the artifact store, the checkpoints and the reports.

A run never ends as a success without having trained and evaluated: a training split left empty is a
:class:`~kdkit.errors.DataError` (the user's data, refused before anything is written); no optimiser step for any
other reason, or a NaN/infinite evaluation metric, is an internal fault (:class:`RunFault`, the CLI's exit 1) and no
report is written, so ``kdkit compare`` never reuses such a run as finished. Ctrl-C once training has begun becomes
:class:`RunInterrupted` (the step reached, whether ``--resume`` can continue); any other fault that is not a user
error carries the run folder as ``kdkit_run_dir``, where the CLI writes ``error.log``.

``--resume`` continues only the run the folder holds: the recipe must equal its ``recipe.yaml`` (with ``--force``,
keys in :data:`RESUME_SAFE_KEYS` may differ) and the training split must match the digest in
:data:`DATA_RECORD`; both are checked before anything is written, and ``recipe.yaml`` is rewritten only after.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from accelerate import PartialState
from torch import nn
from transformers import set_seed

from kdkit.capture import Capture, Representations, num_layers
from kdkit.config import Recipe, describe_difference, recipe_differences, recipe_to_yaml, with_current_defaults
from kdkit.engine.checkpoints import checkpoint_step, last_complete_checkpoint
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import CacheError, ConfigError, DataError, KdkitError
from kdkit.loading import load_model, load_tokenizer, model_config
from kdkit.report.card import write_model_card
from kdkit.report.environment import environment
from kdkit.report.evaluate import count_parameters
from kdkit.report.report import write_report
from kdkit.signals import CachedTeacher, LiveTeacher, SignalSpec, TeacherCache, build_cache, example_key
from kdkit.signals.cache import fingerprint_model, fingerprint_tokenizer, real_token_ids
from kdkit.signals.live import teacher_inputs
from kdkit.store import ArtifactStore, digest
from kdkit.students import StudentContext, build_student
from kdkit.students.embedding import compress_student
from kdkit.terms import SetupContext, build_terms, config_class, signal_spec


class Task:
    """A task: ``name`` (the recipe's ``task:``), ``recipe`` (its typed recipe class), ``primary_metric`` (higher is
    better; the distillation metric and leaderboards rank by it), ``pipeline_tag`` (the Hub's, for the model
    card), and :meth:`run`, the entry point ``kdkit distill`` calls."""

    name: ClassVar[str] = ""
    recipe: ClassVar[type[Recipe]] = Recipe
    primary_metric: ClassVar[str] = ""
    pipeline_tag: ClassVar[str] = ""

    def run(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False, force: bool = False) -> dict:
        """Train, evaluate and report; ``resume`` continues the run in ``output_dir`` (``force``: with the changes
        :data:`RESUME_SAFE_KEYS` allows), ``overwrite`` replaces it."""
        raise NotImplementedError

    def compare_figures(self, board: dict, out: Path) -> list[tuple[str, Path]]:
        """Pictures a comparison of this task's runs adds beside its leaderboard (``kdkit compare``), written under
        ``out``: ``(caption, path)`` each; none by default."""
        return []

    def compare_tables(self, board: dict) -> list[tuple[str, str]]:
        """Tables a comparison of this task's runs adds beside its leaderboard in a ``--document``: ``(caption,
        markdown table)`` each; none by default."""
        return []


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written."""

    recipe: Recipe
    data: Any
    tokenizer: Any
    teacher_tokenizer: Any
    teacher: nn.Module | None  # None: a teacher-free recipe (teacher_tokenizer is then the student's)
    student: nn.Module
    module: DistillationModule
    extras: dict[str, Any] = field(default_factory=dict)  # task-specific (a vocabulary map, ...)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TrainerTask(Task):
    """A task trained by :class:`DistillationTrainer`; subclasses provide the hooks, :meth:`run` is the pipeline.

    ``auto_class`` (``AutoModel``, ``AutoModelForCausalLM``, ...) loads the task's teachers and pretrained students
    when the task keeps the default :meth:`load_teacher` and :meth:`build_student`."""

    auto_class: ClassVar[Any] = None

    # --- hooks ---------------------------------------------------------------------------------------------------
    def load_data(self, recipe: Recipe) -> Any:
        """The task's splits (``train``/``validation``/``test``), before tokenisation."""
        raise NotImplementedError

    def load_teacher(self, recipe: Recipe, data: Any, path: str) -> tuple[nn.Module, Any]:
        """The teacher model (with the task's head) and its tokenizer; by default ``auto_class``'s."""
        return load_model(path, self.auto_class, "teacher.model")

    def build_student(self, recipe: Recipe, data: Any, teacher: nn.Module | None, teacher_tokenizer: Any
                      ) -> tuple[nn.Module, Any]:
        """The student and its tokenizer, as ``student.init`` says; by default with ``auto_class``'s head."""
        ctx = StudentContext(teacher=teacher, teacher_tokenizer=teacher_tokenizer, auto_class=self.auto_class,
                             load_pretrained=lambda name, key: load_model(name, self.auto_class, key),
                             load_config=model_config, load_tokenizer=load_tokenizer)
        return build_student(recipe.student, ctx)

    supervised_loss: ClassVar[str] = ""  # the task's teacher-free loss on gold targets (ce, nll)

    def training_texts(self, recipe: Recipe, data: Any) -> list[str]:
        """The training split's texts as the student reads them (the corpus that word importances are counted
        over, ``student.embedding``)."""
        raise ConfigError(f"recipe key 'student.embedding': the {recipe.task} task does not compress embeddings "
                          f"(it gives no training texts to score words on)")

    def finetune_teacher(self, recipe: Recipe, data: Any) -> str:
        """Fine-tune the teacher as ``teacher.finetune`` says, once (kept in the artifact store); its folder."""
        raise NotImplementedError

    def tokenize(self, prep: Prepared) -> Any:
        """Tokenised splits (a ``DatasetDict``); the teacher's own ids as ``teacher_input_ids`` where it needs
        them."""
        raise NotImplementedError

    def collator(self, prep: Prepared):
        raise NotImplementedError

    def forward(self, capture: Capture, batch: dict) -> Representations:
        """How the student is called on a batch; the representations the terms read."""
        return capture(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def module_forward(self, recipe: Recipe):
        """The student's forward for this recipe (:meth:`forward` unless a recipe setting changes it)."""
        return self.forward

    def teacher_forward(self, capture: Capture, batch: dict) -> Representations:
        """How the live teacher is called on a batch (its own token ids where its tokenizer differs)."""
        return capture(**teacher_inputs(batch))

    def num_outputs(self, prep: Prepared) -> int:
        """Size of the logits' last axis (classes, vocabulary): dense or top-k teacher cache."""
        raise NotImplementedError

    def evaluate(self, prep: Prepared) -> dict:
        """The report's results: ``{"teacher": entry (absent without one), "student": entry, ...}`` with entries
        ``{"name", "params", "n", "metrics": {primary, ...}, "latency"}`` (see :mod:`kdkit.report.report`)."""
        raise NotImplementedError

    def cache_plan(self, prep: Prepared, train) -> tuple[SignalSpec | None, str, Any, Any]:
        """What a teacher cache holds for this run: ``(spec, reason, examples, collator)``; ``spec`` None (with the
        reason) when the terms need the live teacher. By default the signals the terms ask for, per example of the
        training split."""
        recipe = prep.recipe
        spec, reason = signal_spec(list(prep.module.terms), self.num_outputs(prep), top_k=recipe.teacher.cache_top_k,
                                   dense_max=recipe.teacher.cache_dense_max)
        return spec, reason, train, self.collator(prep)

    def signal_source(self, prep: Prepared, cache: TeacherCache | None):
        """The teacher signal source the trainer calls on each batch: read from ``cache``, or (None) the live
        teacher."""
        if cache is not None:
            return CachedTeacher(cache)
        return LiveTeacher(prep.teacher, self.teacher_forward, **prep.module.teacher_needs().capture_kwargs())

    def evaluate_saved(self, prep: Prepared, out: Path | None) -> dict:
        """The results of :meth:`evaluate_model` (its per-example files written to ``out`` when given); tasks that
        evaluate a saved model (``kdkit eval --task ...``) override it."""
        raise ConfigError(f"task '{self.name}' has no evaluation of a saved model")

    def evaluate_model(self, recipe: Recipe, output_dir: str | Path | None = None) -> dict:
        """``kdkit eval --task TASK``: the recipe's pretrained student (and teacher, if any) evaluated as they are;
        the report written to ``output_dir`` when given."""
        if type(self).evaluate_saved is TrainerTask.evaluate_saved:
            self.evaluate_saved(None, None)  # the one-line refusal, before any model is loaded
        if recipe.student.init != "pretrained":
            raise ConfigError("kdkit eval evaluates a saved model: student.init must be 'pretrained'")
        out = Path(output_dir) if output_dir is not None else None
        report = {"task": self.name, "primary_metric": self.primary_metric,
                  **self.evaluate_saved(self.prepare(recipe), out)}
        if out is not None:
            write_report(out, report)
        return report

    def evaluate_student(self, prep: Prepared, model, name: str) -> dict:
        """One model's entry on the evaluation split, measured as the trained student is: the rows of
        ``evaluation.before`` and ``evaluation.int8``. Tasks that offer those rows override it."""
        raise ConfigError(f"task '{self.name}' has no evaluation.before or evaluation.int8 rows; leave both false")

    def student_variants(self, prep: Prepared, out: Path) -> dict:
        """The ``variants`` of the report: the student before training (measured by :meth:`run` before the first
        step, read back from ``before.json``) and its int8 copy (:func:`kdkit.models.int8.quantize_int8`), as
        ``evaluation`` asks."""
        cfg = prep.recipe.evaluation
        variants = {}
        if cfg.before:
            variants["before training"] = json.loads((out / BEFORE_RECORD).read_text())
        if cfg.int8:
            from kdkit.models.int8 import quantize_int8, state_bytes

            model = quantize_int8(prep.student)
            entry = self.evaluate_student(prep, model, "int8 (dynamic linear, int8 embedding rows)")
            variants["int8"] = {**entry, "params": count_parameters(prep.student), "size_mb": state_bytes(model) / 1e6}
        return variants

    def sub_networks(self, prep: Prepared, out: Path, full: dict) -> list[dict]:
        """``student.adaptive``: every sub-network but the full one exported to ``<out>/sub-networks/width-<w>-
        depth-<d>`` (:func:`kdkit.students.adaptive.export_sub_network`), loaded back from there and evaluated as
        the student is; the grid's entries, the full network's (``full``, the run's student) first. Empty without
        ``student.adaptive``."""
        adaptive = prep.recipe.student_adaptive()
        if adaptive is None:
            return []
        from transformers import AutoModelForSequenceClassification

        from kdkit.students.adaptive import export_sub_network, kept_layers, width_sizes

        n_layers = prep.student.config.num_hidden_layers
        evaluation = prep.recipe.evaluation
        # the validation split's metrics too: a budget pick (kdkit pick) chooses on them, never on the test split
        on_validation = dataclasses.replace(prep, recipe=prep.recipe.model_copy(update={
            "evaluation": evaluation.model_copy(update={"split": "validation", "latency_batch_sizes": [1],
                                                        "latency_repeats": 1})}))
        entries = []
        for width, depth in adaptive.sub_networks():
            heads, neurons = width_sizes(prep.student, width)
            name = f"sub-network width {width:g} × depth {depth:g}"
            shape = {"width": width, "depth": depth, "heads": heads, "neurons": neurons,
                     "layers": kept_layers(n_layers, depth)}
            if (width, depth) == (1.0, 1.0):
                model, folder, entry = prep.student, out / "student", full
            else:
                folder = export_sub_network(prep.student, width, depth, out / "sub-networks" /
                                            f"width-{width:g}-depth-{depth:g}", prep.tokenizer)
                model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
                model.to(next(prep.student.parameters()).device)
                entry = self.evaluate_student(prep, model, name)
            validation = self.evaluate_student(on_validation, model, name)["metrics"]
            entries.append({**entry, **shape, "validation": validation, "dir": str(folder)})
        return entries

    def _evaluate_before(self, prep: Prepared, out: Path) -> None:
        """``evaluation.before``: the student as built, evaluated once before training into ``before.json`` (a
        resumed run keeps the one its first start measured)."""
        path = out / BEFORE_RECORD
        if prep.recipe.evaluation.before and not path.exists():
            was_training = prep.student.training
            entry = self.evaluate_student(prep, prep.student, "student as built")
            prep.student.train(was_training)
            path.write_text(json.dumps(entry, indent=1) + "\n")

    def store_teacher_signals(self, prep: Prepared, *, rebuild: bool = False) -> dict | None:
        """``kdkit cache`` for a task that stores its teacher's signals itself (not in a :class:`TeacherCache`):
        build (or, with ``rebuild``, rebuild) that entry and return its ``path``, ``examples``, ``bytes`` and
        ``bytes_per_example``; None (the default) uses the shared teacher cache."""
        return None

    def teacher_signals(self, prep: Prepared, train):
        """The teacher signal source the trainer reads (:func:`teacher_source`: a cache or the live teacher; none
        when no loss reads the teacher)."""
        return teacher_source(self, prep, train)

    def batch_hook(self, prep: Prepared):
        """A function the trainer applies to each training batch before the teacher sees it (see
        :class:`~kdkit.engine.trainer.DistillationTrainer`), or None (the default)."""
        return None

    def export(self, prep: Prepared, trainer: DistillationTrainer, folder: Path) -> Path:
        """Write the student in its ecosystem's format (an HF folder by default)."""
        return trainer.export_student(folder, prep.tokenizer)

    # --- the pipeline --------------------------------------------------------------------------------------------
    def prepare(self, recipe: Recipe, teacher_path: str | None = None, data: Any = None) -> Prepared:
        """Load data and models and build the loss terms; raise a one-line error on any mismatch (each model is
        checked as soon as it is read: ``data.max_length`` against its positions, the student's overrides by its
        builder, layer maps against both depths)."""
        # built here only as a check: a bad training.extra value would otherwise surface after output_dir is written
        training_arguments(recipe.training, recipe.resolved_output_dir() / "checkpoints")
        if recipe.teacher is not None and recipe.teacher.finetune:
            training_arguments(recipe.teacher.finetune, recipe.resolved_output_dir() / "checkpoints")
        data = data if data is not None else self.load_data(recipe)
        teacher_path = teacher_path or (recipe.teacher.model if recipe.teacher else None)
        set_seed(recipe.training.seed)  # fresh heads and random-init students are reproducible from the seed
        teacher, teacher_tokenizer = (None, None) if teacher_path is None else \
            self.load_teacher(recipe, data, teacher_path)
        check_max_length(recipe, teacher, "teacher")
        student, tokenizer = self.build_student(recipe, data, teacher, teacher_tokenizer)
        embedding = recipe.student.embedding
        if embedding is not None and embedding.method != "differentiable":  # that one needs batches: prepare_all
            compress_student(student, tokenizer, self.training_texts(recipe, data), embedding,
                             seed=recipe.training.seed)
        check_max_length(recipe, student, "student")
        check_layer_maps(recipe, teacher, student)
        terms = build_terms(recipe.losses, teacher, student)
        adaptive = recipe.student_adaptive()
        if adaptive is not None:
            from kdkit.engine.adaptive import AdaptiveDistillationModule
            from kdkit.students.adaptive import width_sizes

            for width in adaptive.widths:  # a model that has no BERT layers fails here, in one line
                width_sizes(student, width)
            module = AdaptiveDistillationModule(student, terms, adaptive.sub_networks(),
                                                forward=self.module_forward(recipe))
        else:
            module = DistillationModule(student, terms, forward=self.module_forward(recipe))
        return Prepared(recipe, data, tokenizer, teacher_tokenizer if teacher is not None else tokenizer, teacher,
                        student, module)

    def setup_terms(self, prep: Prepared, splits) -> None:
        """Each term's :meth:`~kdkit.terms.Term.setup` hook, in recipe order, before training; a term may carve a
        held-out split from ``splits["train"]`` (RW-KD's meta set) or fit something on the teacher (probes)."""
        recipe = prep.recipe
        ctx = SetupContext(prep.teacher, splits["train"], self.collator(prep), device=_device(),
                           data_seed=recipe.data.seed, batch_size=recipe.training.batch_size,
                           learning_rate=recipe.training.learning_rate)
        with PartialState().main_process_first():  # the main rank fits and stores; the others read it back
            for term in prep.module.terms:
                term.setup(ctx)
        splits["train"] = ctx.train

    def prepare_all(self, recipe: Recipe) -> tuple[Prepared, Any, str | None]:
        """Models checked on the recipe's own teacher first (a bad recipe fails in seconds, before a long
        fine-tuning), then the fine-tuned teacher, tokenised splits and set-up terms."""
        prep = self.prepare(recipe)
        teacher_path = recipe.teacher.model if recipe.teacher is not None else None
        if recipe.teacher is not None and recipe.teacher.finetune:
            with PartialState().main_process_first():  # one rank fine-tunes, the others read the stored result
                teacher_path = self.finetune_teacher(recipe, prep.data)
            prep = self.prepare(recipe, teacher_path, prep.data)
        splits = self.tokenize(prep)
        if recipe.student.embedding is not None and recipe.student.embedding.method == "differentiable":
            self.compress_by_gates(prep, splits["train"])
        if recipe.student_adaptive() is not None and recipe.student_adaptive().rewire:
            self.rewire_student(prep, splits["train"])
        self.setup_terms(prep, splits)
        return prep, splits, teacher_path

    def _supervised_module(self, prep: Prepared) -> DistillationModule:
        """The student with the task's supervised loss alone (``ce``, ``nll``): a loss on gold targets to score
        the student's parts by."""
        config = config_class(self.supervised_loss)(name=self.supervised_loss)
        return DistillationModule(prep.student, build_terms([config], None, prep.student),
                                  forward=self.module_forward(prep.recipe))

    def rewire_student(self, prep: Prepared, train) -> None:
        """``student.adaptive.rewire``: DynaBERT's importance of every head and FFN neuron (the gradient of the
        supervised loss on ``importance_examples`` training examples, drawn with ``data.seed``), then the student's
        heads and neurons reordered by it (:mod:`kdkit.students.adaptive`); the full network's function is kept."""
        from torch.utils.data import DataLoader

        from kdkit.students.adaptive import head_neuron_importance, rewire

        recipe = prep.recipe
        n = min(recipe.student_adaptive().importance_examples, len(train))
        subset = train.shuffle(seed=recipe.data.seed).select(range(n))
        loader = DataLoader(subset, batch_size=recipe.training.batch_size, collate_fn=self.collator(prep))
        module = self._supervised_module(prep)
        heads, neurons = head_neuron_importance(prep.student, loader, lambda model, batch: module(batch)[0])
        rewire(prep.student, heads, neurons)
        print(f"[kdkit] student rewired by DynaBERT importance over {n} training examples")

    def compress_by_gates(self, prep: Prepared, train) -> None:
        """``student.embedding.method: differentiable``: train per-word gates on the student with the task's
        supervised loss (:func:`kdkit.students.embedding.gate_scores`), then compress by them."""
        from torch.utils.data import DataLoader

        from kdkit.students.embedding import frequency_scores, gate_scores

        recipe, cfg = prep.recipe, prep.recipe.student.embedding
        module = self._supervised_module(prep)
        loader = DataLoader(train, batch_size=recipe.training.batch_size, shuffle=True,
                            collate_fn=self.collator(prep),
                            generator=torch.Generator().manual_seed(recipe.training.seed))

        def batches():
            while True:
                yield from loader

        texts = self.training_texts(recipe, prep.data)
        vocab_size = prep.student.get_input_embeddings().weight.shape[0]
        seen = frequency_scores(prep.tokenizer(texts)["input_ids"], vocab_size) > 1
        scores = gate_scores(prep.student, batches(), lambda batch: module(batch)[0], seen, cfg.gate_steps,
                             cfg.gate_target, cfg.gate_weight, cfg.gate_lr)
        compress_student(prep.student, prep.tokenizer, texts, cfg, seed=recipe.training.seed, scores=scores)

    def run(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False, force: bool = False) -> dict:
        out = recipe.resolved_output_dir()
        check_output_dir(out, resume, overwrite)
        if resume:
            check_resume_recipe(out, recipe, force=force)
        ours = resume  # whether output_dir holds this run, so a fault's log belongs there
        if (recipe.evaluation.before or recipe.evaluation.int8) \
                and type(self).evaluate_student is TrainerTask.evaluate_student:
            self.evaluate_student(None, None, "")  # the one-line refusal, before anything is loaded or written
        try:
            prep, splits, teacher_path = self.prepare_all(recipe)
            if len(splits["train"]) == 0:
                raise DataError("the training split has no examples left to train on (after the terms' set-up, "
                                "e.g. a held-out meta split); give more training data")
            train_digest = data_digest(splits["train"])
            if resume:
                check_resume_data(out, train_digest, force=force)
            teacher = self.teacher_signals(prep, splits["train"])

            state = PartialState()
            state.wait_for_everyone()  # every rank has passed its checks before the main rank touches output_dir
            if state.is_main_process:
                if overwrite and out.exists():
                    shutil.rmtree(out)
                out.mkdir(parents=True, exist_ok=True)
                (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
                (out / DATA_RECORD).write_text(json.dumps(train_digest, indent=1) + "\n")
                (out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
                self._evaluate_before(prep, out)
            ours = True
            state.wait_for_everyone()
            args = training_arguments(recipe.training, out / "checkpoints")
            trainer = DistillationTrainer(prep.module, args, teacher=teacher, train_dataset=splits["train"],
                                          data_collator=self.collator(prep), batch_hook=self.batch_hook(prep))
            try:
                return self._train_and_report(prep, trainer, out, teacher_path, resume=resume)
            except KeyboardInterrupt as err:
                resumable = last_complete_checkpoint(out / "checkpoints") is not None
                raise RunInterrupted(trainer.state.global_step, resumable) from err
        except Exception as err:
            if ours and not isinstance(err, KdkitError) and not hasattr(err, "kdkit_run_dir"):
                err.kdkit_run_dir = out  # the innermost run (a generation, a compared run) keeps it
            raise

    def _train_and_report(self, prep: Prepared, trainer: DistillationTrainer, out: Path, teacher_path: str | None,
                          *, resume: bool) -> dict:
        recipe = prep.recipe
        trainer.train(resume_from_checkpoint=True if resume else None)
        if trainer.state.global_step == 0:  # an empty split was refused before: this is no user's doing
            raise RunFault("training took no optimiser step; no report written")
        student_dir = self.export(prep, trainer, out / "student")
        if not PartialState().is_main_process:  # one rank evaluates and reports; the others are done
            return {}
        (out / "metrics.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
        results = self.evaluate(prep)
        variants = self.student_variants(prep, out)
        grid = self.sub_networks(prep, out, results["student"])
        if grid:
            results["sub_networks"] = grid
            variants |= {f"width {e['width']:g} × depth {e['depth']:g}": e for e in grid[1:]}
        if variants:
            results["variants"] = variants
            if "int8" in variants:  # the float student's size beside the int8 copy's
                from kdkit.models.int8 import state_bytes

                results["student"]["size_mb"] = state_bytes(prep.student) / 1e6
        check_finite_metrics({**results, **variants}, recipe.evaluation.split)
        report = {"task": self.name, "primary_metric": self.primary_metric, **results,
                  "recipe": recipe.name, "student_dir": str(student_dir), "teacher_source": teacher_path,
                  "train_seconds": round(trainer.train_seconds, 3)}
        write_report(out, report)
        if grid:
            from kdkit.report.sub_networks import append_grid

            append_grid(out, grid, self.primary_metric, f"{recipe.name}: sub-networks")
        write_model_card(student_dir, results=report, recipe=recipe.model_dump(mode="json"), task=self.name,
                         pipeline_tag=self.pipeline_tag)
        return report


def stored_teacher(label: str, key: str, build, how: str, meta: dict) -> str:
    """The folder of a fine-tuned teacher in the artifact store: found under ``<label slug>-<key>``, or built there
    once by ``build(work_folder)`` (``how`` says what the build does, for the message) with ``meta`` beside it
    (read after the build, so it may fill it in). Lookups compare sizes only: hashing 400 MB costs seconds."""
    name = "".join(c if c.isalnum() else "-" for c in label)[-60:] + f"-{key}"
    store = ArtifactStore()
    found = store.get("teachers", name, hashes=False)
    if found is not None:
        print(f"[kdkit] fine-tuned teacher found in cache: {found}")
        return str(found)
    print(f"[kdkit] {how} (stored afterwards in {store.path('teachers', name)})")
    return str(store.put("teachers", name, build, meta=meta))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C once a run's training had begun: the step it reached and how to go on (the CLI prints ``str``).

    ``hint`` is what to do next; ``kdkit compare`` replaces it, since running the comparison again resumes."""

    def __init__(self, step: int, resumable: bool):
        super().__init__(step, resumable)
        self.step, self.resumable = step, resumable
        self.hint = ("resume with --resume" if resumable
                     else "no checkpoint was written yet, so start it again with --overwrite")

    def __str__(self) -> str:
        return f"interrupted at step {self.step}; {self.hint}"


class RunFault(RuntimeError):
    """A run that cannot count as done though no input of the user's is to blame (no step taken, a NaN metric)."""


def check_finite_metrics(results: dict, split: str) -> None:
    """Raise :class:`RunFault` on a NaN or infinite metric in an evaluation's entries (teacher, student, ...)."""
    for who, entry in results.items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        for name, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise RunFault(f"the {who}'s {name} on the {split} split is {value}; no report written")


# keys a resume may change, with --force: they steer logging, saving, reporting, evaluation, where the teacher's
# signals are read from, and how long training goes on (the learning-rate schedule is rebuilt for the new length;
# dataset distillation's ``training.iterations``, whose step decay does not depend on the length).
# Every other key either shaped what the checkpoint holds (student, losses, data, teacher, task) or is fixed by
# the optimiser, scheduler and RNG states it restores (learning rate, batch size, seed): a new value would be
# silently ignored or break the restore. output_dir is the folder being resumed, whatever its spelling.
RESUME_SAFE_KEYS = ("name", "training.epochs", "training.max_steps", "training.iterations", "training.logging_steps",
                    "training.save_steps",
                    "training.save_total_limit", "training.report_to", "training.eval_batch_size",
                    "training.nonfinite", "training.max_consecutive_nonfinite", "teacher.cache", "evaluation")
_NEW_RUN = "start a new run instead (--overwrite, another output_dir, or delete the folder)"


def _resume_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE_KEYS)


def check_resume_recipe(out: Path, recipe: Recipe, *, force: bool) -> None:
    """Refuse to resume the run in ``out`` with a recipe other than its ``recipe.yaml``, naming the first
    difference; with ``force``, differences in :data:`RESUME_SAFE_KEYS` only are accepted."""
    try:
        old = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise ConfigError(f"--resume: '{out}' holds no readable recipe.yaml, so the recipe its run started with is "
                          f"unknown; {_NEW_RUN}") from None
    found = [d for d in recipe_differences(with_current_defaults(old), yaml.safe_load(recipe_to_yaml(recipe)))
             if d[0] != "output_dir"]
    unsafe = [d for d in found if not _resume_safe(d[0])]
    if unsafe:
        key = unsafe[0][0]
        why = ("the optimiser, scheduler and data-order state restored from the checkpoint would keep the old value"
               if key.startswith("training.") else "the checkpoint holds what the old recipe built and trained")
        raise ConfigError(f"--resume: recipe key '{key}' differs from the run in '{out}' "
                          f"({describe_difference(unsafe[0])}) and cannot change on resume: {why}; {_NEW_RUN}")
    if found and not force:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise ConfigError(f"--resume: the recipe differs from the run in '{out}' ({describe_difference(found[0])}"
                          f"{more}); pass --force as well to resume with the new values (logging, saving, "
                          f"evaluation and training-length keys may change), or {_NEW_RUN}")
    last = last_complete_checkpoint(out / "checkpoints")
    # the Trainer's max_steps, dataset distillation's iterations (checkpoints count those); none for other loops
    key = next((k for k in ("max_steps", "iterations") if hasattr(recipe.training, k)), None)
    limit = getattr(recipe.training, key) if key else 0
    if last is not None and 0 < limit < checkpoint_step(last):
        raise ConfigError(f"--resume: training.{key} {limit} is below the step the run has reached ({last.name}); "
                          f"give at least {checkpoint_step(last)}, or {_NEW_RUN}")


DATA_RECORD = "train_data.json"
BEFORE_RECORD = "before.json"  # evaluation.before: the student measured before its first step


def data_digest(train) -> dict:
    """What a run trains on, for ``--resume`` to notice a change: the number of examples and a sha256 of each
    column of the tokenised training split (ids, labels, text, ...), in training order."""
    columns = sorted(train.column_names)
    hashes = {column: hashlib.sha256() for column in columns}
    for batch in train.iter(batch_size=1024):
        for column in columns:
            hashes[column].update(json.dumps(batch[column]).encode())
    return {"examples": len(train), "columns": {column: h.hexdigest() for column, h in hashes.items()}}


def check_resume_data(out: Path, current: dict, *, force: bool) -> None:
    """Refuse to resume the run in ``out`` on training data other than it started with (:data:`DATA_RECORD`).
    ``force`` accepts a run folder without the record (written by an earlier kdkit), never a change."""
    try:
        stored = json.loads((out / DATA_RECORD).read_text(encoding="utf-8"))
        stored_columns, stored_examples = dict(stored["columns"]), stored["examples"]
    except (OSError, ValueError, KeyError, TypeError):
        if force:
            return
        raise ConfigError(f"--resume: '{out}' holds no readable {DATA_RECORD} (the digest of the training data its "
                          f"run started with), so a change of the data cannot be ruled out; pass --force as well to "
                          f"resume anyway, or {_NEW_RUN}") from None
    if stored == current:
        return
    if stored_examples != current["examples"]:
        what = f"{stored_examples} → {current['examples']} examples"
    else:
        changed = [c for c in sorted(stored_columns.keys() | current["columns"].keys())
                   if stored_columns.get(c) != current["columns"].get(c)]
        what = f"column{'s' if len(changed) > 1 else ''} {', '.join(map(repr, changed))} of {stored_examples} examples"
    raise DataError(f"--resume: the training data changed since the run in '{out}' started ({what}); its "
                    f"checkpoint was trained on other examples; {_NEW_RUN}")


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if last_complete_checkpoint(out / "checkpoints") is None:
            raise ConfigError(f"--resume: output_dir '{out}' holds no complete checkpoint to resume from")
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output_dir '{out}' already holds a run; pass --resume to continue it or "
                          f"--overwrite to replace it")


def position_limit(model: nn.Module) -> int | None:
    """How many tokens ``model`` can read: the size of its learned position table, less the positions it reserves
    (RoBERTa and MPNet number positions from ``padding_idx`` + 1), and at most ``max_position_embeddings``; None
    for a model without such a table (rotary or relative positions, a BiLSTM), which has no hard limit."""
    table = next((module for name, module in model.named_modules()
                  if name.rsplit(".", 1)[-1] in ("position_embeddings", "wpe", "embed_positions")
                  and isinstance(module, nn.Embedding)), None)
    if table is None:
        return None
    limit = table.num_embeddings - (table.padding_idx + 1 if table.padding_idx is not None else 0)
    configured = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(limit, configured) if isinstance(configured, int) and configured > 0 else limit


def check_max_length(recipe: Recipe, model: nn.Module | None, role: str) -> None:
    """``data.max_length`` (where the task has one) fits the positions ``model`` can read; else the model would
    fail deep inside its embeddings at the first long batch."""
    max_length = getattr(recipe.data, "max_length", None)
    limit = None if model is None or max_length is None else position_limit(model)
    if limit is not None and max_length > limit:
        raise ConfigError(f"recipe key 'data.max_length': {max_length} is more than the {role} can read ({limit} "
                          f"positions, its max_position_embeddings); use at most {limit}")


def check_layer_maps(recipe: Recipe, teacher: nn.Module | None, student: nn.Module) -> None:
    """A generated layer map spreads the student's blocks over the teacher's, so it needs a student no deeper than
    the teacher; name the loss that asks for one (the map itself only knows the two depths)."""
    for i, term in enumerate(recipe.losses):
        kind = getattr(term, "layer_map", None)
        if kind in ("pairs", "last", None) or teacher is None:
            continue
        n_teacher, n_student = num_layers(teacher), num_layers(student)
        if n_student > n_teacher:
            raise ConfigError(f"recipe key 'losses[{i}].layer_map': '{kind}' needs a student no deeper than the "
                              f"teacher, but the student has {n_student} layers and the teacher {n_teacher}; use "
                              f"layer_map 'pairs' with [teacher, student] indices or a shallower student")


def teacher_cache(task: TrainerTask, prep: Prepared, train, *, rebuild: bool = False
                  ) -> tuple[TeacherCache | None, str]:
    """Open or build the teacher cache the recipe asks for; ``(None, reason)`` when the teacher must run live.

    ``teacher.cache: auto`` names the cache after everything it depends on (teacher weights, tokenizer, signal
    spec, the training examples' keys), so any change builds a new one and a stale cache is never read. An
    explicit directory is opened and refused if stale or missing examples, unless ``rebuild``.
    """
    recipe = prep.recipe
    mode = recipe.teacher.cache
    if mode == "off":
        return None, "teacher.cache is off"
    spec, reason, examples, collator = task.cache_plan(prep, train)
    if spec is None:
        if mode != "auto":
            raise ConfigError(f"teacher.cache '{mode}': the recipe cannot use a teacher cache: {reason}")
        return None, reason
    teacher_fp, tokenizer_fp = fingerprint_model(prep.teacher), fingerprint_tokenizer(prep.teacher_tokenizer)
    keys = [example_key(real_token_ids(example)) for example in examples]
    if mode == "auto":
        path = ArtifactStore().path("signals", digest({
            "teacher": teacher_fp, "tokenizer": tokenizer_fp, "spec": spec.to_dict(),
            "examples": hashlib.sha256(b"".join(sorted(set(keys)))).hexdigest()}))
    else:
        path = Path(mode)
    with PartialState().main_process_first():  # the main rank builds; the others open what it wrote
        cache = None
        if (path / "manifest.json").is_file() and not rebuild:
            cache = TeacherCache.open(path, spec=spec, teacher_fingerprint=teacher_fp,
                                      tokenizer_fingerprint=tokenizer_fp)
            missing = sum(key not in cache for key in set(keys))
            if missing:
                raise CacheError(f"{missing} training examples are not in the teacher cache '{path}': the data "
                                 f"changed since it was built; rebuild with `kdkit cache RECIPE --rebuild`")
        if cache is None:
            print(f"[kdkit] caching teacher signals ({spec.logits or 'no'} logits, hidden {list(spec.hidden_layers)}, "
                  f"pooled {list(spec.pooled_layers)}) in {path}")
            prep.teacher.to(_device())
            cache = build_cache(path, prep.teacher, examples, collator, spec, tokenizer_fingerprint=tokenizer_fp,
                                batch_size=recipe.training.eval_batch_size, device=_device(),
                                forward=task.teacher_forward)
    return cache, ""


def teacher_source(task: TrainerTask, prep: Prepared, train):
    """The teacher signal source for training: none when no loss reads the teacher, the cache when the recipe
    allows it, else the live teacher."""
    if not any(term.reads_teacher for term in prep.module.terms):
        return None
    cache, reason = teacher_cache(task, prep, train)
    if cache is None:
        print(f"[kdkit] teacher runs live at every step: {reason}")
    return task.signal_source(prep, cache)


def build_teacher_cache(task: TrainerTask, recipe: Recipe, *, rebuild: bool = False) -> dict:
    """Build (or check) the teacher cache of a recipe: ``kdkit cache RECIPE``."""
    if recipe.teacher is None:
        raise ConfigError("the recipe has no teacher, so there is no teacher cache to build")
    if recipe.teacher.cache == "off":
        raise ConfigError("teacher.cache is 'off'; set it to 'auto' or a directory to build a cache")
    prep, splits, _ = task.prepare_all(recipe)  # the cache covers the examples distill trains on
    started = time.perf_counter()
    own = task.store_teacher_signals(prep, rebuild=rebuild)
    if own is not None:  # a task that stores its teacher's signals its own way (the multimodal views)
        return {**own, "seconds": round(time.perf_counter() - started, 3)}
    built, reason = teacher_cache(task, prep, splits["train"], rebuild=rebuild)
    if built is None:
        raise ConfigError(f"the recipe cannot use a teacher cache: {reason}")
    return {"path": str(built.path), "examples": built.num_examples, "bytes": built.nbytes,
            "bytes_per_example": built.nbytes / built.num_examples, "seconds": round(time.perf_counter() - started, 3),
            "spec": built.spec.to_dict()}
