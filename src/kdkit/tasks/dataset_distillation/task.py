"""``task: dataset_distillation``: learn a tiny synthetic training set (soft-label dataset distillation).

Sucholutsky & Schonlau (IJCNN 2021), on Wang et al. (2018); the objective is :mod:`kdkit.losses.distilled_data`.
A task with its own loop on the task interface: it has no teacher model and no ``transformers.Trainer``; it
reuses the recipe checks, the sealed checkpoints (:mod:`kdkit.engine.checkpoints`), the artifact store and the
report writer.

**Learning** (``distill``, ``training``): ``samples`` synthetic images x̃ (from N(0, 1) in the normalised pixel
space, seeded), laid out as ``steps`` batches; labels ``soft`` (learnable distributions, started ``onehot`` on
classes 0, 1, …, C − 1, 0, … in turn, or ``random``) or ``hard`` (fixed one-hot, Wang et al.'s original; with fewer
samples than classes the last classes have none, the case soft labels were made for); one learning rate per inner
step, T = steps · epochs, η_t = softplus(ρ_t) started at ``lr_init``. θ_0 is ``fixed`` (one draw from
``training.seed``, used at every iteration: the set is made for that initialisation) or ``random`` (a fresh draw at
each iteration: the set must train any initialisation). Each of ``training.iterations`` outer steps draws
``batch_size`` real training images and takes one Adam step (learning rate ``learning_rate``, betas (``beta1``,
``beta2``)) on x̃, ỹ and ρ, the Adam learning rate halved (``decay_factor``) every ``decay_every`` iterations. Real
batches and random θ_0 are drawn from (seed, iteration), so a resumed run continues exactly where it stopped.

**Which set is kept** (``training.keep``): ``last``, the set after the final iteration (as the papers do), or
``best``, the set with the highest accuracy on the *validation* split among checks every ``eval_steps`` iterations
(and at the last): a fresh learner trained on the set by its T steps from the fixed θ_0 (``init: random``: the mean
over the evaluation's random initialisations). The final iterate's quality swings by several points between
neighbouring iterations, and so with the float rounding of the machine (MNIST, 10 images: 79.6% and 91.1% test
accuracy for the same seed on two machines); a check costs one tiny training and one pass over the validation
split. The checks are written to ``validation.json`` and drawn in ``validation.png``; the test split is never read
for the choice (with ``evaluation.split: validation`` the reported accuracy is the selected maximum, so tuning
grids use ``last``).

**Evaluation** on ``evaluation.split``: fresh LeNets trained on the distilled set alone by the same T steps with
the learned rates: from the fixed θ_0 (``init: fixed``; the primary ``accuracy``) and from ``evaluation.models``
random initialisations (``accuracy_random_inits``, mean; its standard deviation beside it; the primary metric of an
``init: random`` set). Beside it, as the report's teacher row, the same LeNet trained on all real training images
(Adam, ``full_epochs`` epochs, batch 128, learning rate ``full_learning_rate``; computed once per data, seed and
settings and read back from the artifact store), and as a variant row the honest baseline: a random real subset of
the same size (stratified, drawn from the run's seed) trained from the same initialisations by full-batch Adam for
``subset_steps`` steps at ``full_learning_rate``.

Text works the same way on sentences in a word-embedding space (:mod:`.data`) with a text CNN (:mod:`.models`).

**Output** (``output_dir``): ``distilled/`` holds ``distilled.safetensors`` (images, labels, learning rates),
``distilled.json`` (classes, shape, normalisation, layout, the recipe's settings; for text the nearest vocabulary
word at each position of each synthetic sentence) and, for images, ``grid.png`` (each image with its top labels);
:func:`load_distilled` reads it back and :func:`train_on_distilled` trains a model on it;
``report.md``/``report.json`` as every task's, ``metrics.json`` the outer loss per logged iteration.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file

from kdkit import __version__
from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.engine.loops import check_run_folder, open_run_folder, save_figure
from kdkit.engine.loops import save_checkpoint as save_checkpoint_folder
from kdkit.engine.pipeline import RunFault, RunInterrupted, Task, check_finite_metrics
from kdkit.errors import ConfigError, DataError
from kdkit.losses.distilled_data import (distillation_loss, project_to_simplex, softplus_inverse,
                                         train_on_synthetic)
from kdkit.progress import progress
from kdkit.report.evaluate import count_parameters, measure_latency
from kdkit.report.report import write_report
from kdkit.schema import BatchSize, Count, LearningRate, Seed, Strict
from kdkit.store import ArtifactStore, digest
from kdkit.tasks import register
from kdkit.tasks.dataset_distillation.data import NAMED, TEXT, ImageData, load_images, load_text
from kdkit.tasks.dataset_distillation.models import KINDS, MODELS, build_model

TASK = "dataset_distillation"
DISTILLED = "distilled"
DEFAULT_MODEL = {"image": "lenet", "text": "textcnn"}


def seed_of(*parts) -> int:
    """A 32-bit seed from any values (the same on every platform and run)."""
    return int(digest(parts, size=4), 16)


class DistillDataConfig(Strict):
    """Which named set: images (``mnist``, ``fashion_mnist``, ``digits``) or text (``rotten_tomatoes``,
    ``bbc_news``: sentences of ``max_length`` 1..512 positions in the word-embedding space of ``embedding``);
    ``max_train_samples`` keeps that many training examples (a stratified choice by ``seed``)."""

    dataset: Literal[(*NAMED, *TEXT)] = "mnist"
    max_length: int = Field(32, ge=1, le=512)
    embedding: str = Field("minilm-l6", min_length=1, max_length=4096)
    max_train_samples: Count | None = None
    seed: Seed = 0

    @property
    def kind(self) -> str:
        return "text" if self.dataset in TEXT else "image"


class LearnerConfig(Strict):
    """The network the distilled set is made for (and evaluated on): ``lenet`` (images) or ``textcnn`` (text);
    by default the one for the data's kind."""

    name: Literal[tuple(MODELS)] | None = None


class DistillConfig(Strict):
    """The synthetic set (see the module docstring): ``samples`` 1..10⁴ in ``steps`` batches (``samples`` divisible
    by ``steps``), ``epochs`` passes, labels, the initialisation θ_0 and the first inner learning rate."""

    samples: int = Field(10, ge=1, le=10_000)
    steps: int = Field(1, ge=1, le=1000)
    epochs: int = Field(3, ge=1, le=100)
    labels: Literal["soft", "hard"] = "soft"
    label_init: Literal["onehot", "random"] = "onehot"
    init: Literal["fixed", "random"] = "fixed"
    lr_init: LearningRate = 0.01

    @model_validator(mode="after")
    def _layout(self) -> "DistillConfig":
        if self.samples % self.steps:
            raise ValueError(f"samples {self.samples} must split evenly into steps {self.steps} (one batch per step)")
        if self.labels == "hard" and self.label_init == "random":
            raise ValueError("hard labels are one-hot; label_init 'random' goes with labels 'soft'")
        return self


class DistillTrainConfig(Strict):
    """The outer optimisation: ``iterations`` Adam steps on ``batch_size`` real images each; the Adam learning
    rate times ``decay_factor`` every ``decay_every`` iterations; checkpoints every ``save_steps`` iterations;
    ``keep`` the ``last`` set or the ``best`` on the validation split, checked every ``eval_steps`` iterations."""

    iterations: Count = 2000
    batch_size: BatchSize = 1024
    learning_rate: LearningRate = 0.01
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    decay_every: Count = 200
    decay_factor: float = Field(0.5, gt=0, le=1)
    seed: Seed = 0
    keep: Literal["last", "best"] = "last"
    eval_steps: Count = 50
    save_steps: Count = 100
    logging_steps: Count = 50


class DistillEvaluationConfig(Strict):
    """How the distilled set is judged (see the module docstring): ``models`` 1..1000 random initialisations, the
    full-data model's ``full_epochs`` and the subset baseline's ``subset_steps``, both at ``full_learning_rate``;
    latency of the learner at ``latency_batch_sizes``; ``dm_alpha`` as in every report."""

    split: Literal["validation", "test"] = "test"
    models: int = Field(5, ge=1, le=1000)
    full_epochs: int = Field(5, ge=1, le=1000)
    full_learning_rate: LearningRate = 1e-3
    subset_steps: Count = 300
    latency_batch_sizes: list[BatchSize] = Field(default_factory=lambda: [1, 32], max_length=64)
    latency_repeats: int = Field(20, gt=0, le=10**6)
    dm_alpha: float = Field(0.5, ge=0, le=1)


class DatasetDistillationRecipe(Strict):
    """A dataset-distillation run: ``data``, ``model`` (the learner), ``distill`` (the synthetic set),
    ``training`` (the outer loop), ``evaluation``, ``output_dir``."""

    name: str = Field("distill", min_length=1, max_length=128)
    task: Literal["dataset_distillation"] = TASK
    data: DistillDataConfig = Field(default_factory=DistillDataConfig)
    model: LearnerConfig = Field(default_factory=LearnerConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    training: DistillTrainConfig = Field(default_factory=DistillTrainConfig)
    evaluation: DistillEvaluationConfig = Field(default_factory=DistillEvaluationConfig)
    output_dir: str | None = None

    @model_validator(mode="after")
    def _learner_fits_the_data(self) -> "DatasetDistillationRecipe":
        if self.model.name is not None and KINDS[self.model.name] != self.data.kind:
            raise ConfigError(f"recipe key 'model.name': '{self.model.name}' reads {KINDS[self.model.name]}s but "
                              f"data.dataset '{self.data.dataset}' is {self.data.kind}; use "
                              f"'{DEFAULT_MODEL[self.data.kind]}' or leave model.name out")
        return self

    @property
    def learner(self) -> str:
        return self.model.name or DEFAULT_MODEL[self.data.kind]

    @property
    def generations(self) -> None:  # no born-again generations: the run is the whole recipe
        return None

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")


# --- the synthetic set -----------------------------------------------------------------------------------------------

class SyntheticSet:
    """x̃ ``(n, C, H, W)``, ỹ ``(n, classes)`` and ρ ``(T,)``; ``learnable`` lists what the outer loop updates."""

    def __init__(self, samples: torch.Tensor, labels: torch.Tensor, raw_rates: torch.Tensor, soft: bool):
        self.samples = samples.requires_grad_()
        self.labels = labels.requires_grad_(soft)
        self.raw_rates = raw_rates.requires_grad_()
        self.soft = soft

    @classmethod
    def new(cls, cfg: DistillConfig, shape: tuple[int, ...], classes: int, seed: int) -> "SyntheticSet":
        generator = torch.Generator().manual_seed(seed_of(seed, "synthetic"))
        samples = torch.randn(cfg.samples, *shape, generator=generator)
        if cfg.label_init == "random":
            labels = torch.softmax(torch.randn(cfg.samples, classes, generator=generator), -1)
        else:
            labels = F.one_hot(torch.arange(cfg.samples) % classes, classes).float()
        rates = torch.full((cfg.steps * cfg.epochs,), softplus_inverse(cfg.lr_init))
        return cls(samples, labels, rates, cfg.labels == "soft")

    @property
    def learnable(self) -> list[torch.Tensor]:
        return [self.samples, self.raw_rates] + ([self.labels] if self.soft else [])

    @property
    def learning_rates(self) -> torch.Tensor:
        return F.softplus(self.raw_rates)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"images": self.samples.detach().contiguous(), "labels": self.labels.detach().contiguous(),
                "learning_rates": self.learning_rates.detach().contiguous(),
                "raw_learning_rates": self.raw_rates.detach().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], soft: bool) -> "SyntheticSet":
        return cls(tensors["images"].clone(), tensors["labels"].clone(), tensors["raw_learning_rates"].clone(), soft)


def load_data(cfg: DistillDataConfig) -> ImageData:
    if cfg.kind == "text":
        return load_text(cfg.dataset, cfg.max_length, cfg.embedding, cfg.max_train_samples, cfg.seed)
    return load_images(cfg.dataset, cfg.max_train_samples, cfg.seed)


def initial_parameters(recipe: DatasetDistillationRecipe, data: ImageData, iteration: int) -> torch.nn.Module:
    """θ_0 of an outer iteration: the fixed draw from the seed, or a fresh one per iteration (``init: random``)."""
    seed = recipe.training.seed
    if recipe.distill.init == "random":
        seed = seed_of(seed, "init", iteration)
    return build_model(recipe.learner, data.shape, len(data.classes), seed)


def real_batch(data: ImageData, size: int, seed: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data["train"]
    generator = torch.Generator().manual_seed(seed_of(seed, "batch", iteration))
    index = torch.randint(len(labels), (min(size, len(labels)),), generator=generator)
    return images[index], labels[index]


# --- checkpoints -----------------------------------------------------------------------------------------------------

class Selection:
    """``training.keep: best``'s record: every validation check and the best set so far (its tensors)."""

    def __init__(self, checks: list | None = None, best: dict[str, torch.Tensor] | None = None):
        self.checks, self.best, self.chosen = [], best, None
        for check in checks or []:
            self._record(check)

    def _record(self, check: dict) -> bool:
        """Append a check; True when it is the best so far (later wins ties: it has trained longer)."""
        self.checks.append(check)
        if self.chosen is None or check["accuracy"] >= self.chosen["accuracy"]:
            self.chosen = check
            return True
        return False

    def offer(self, iteration: int, score: float, synthetic: SyntheticSet) -> None:
        """Record a check of ``synthetic``; keep a copy of it when it is the best so far."""
        if self._record({"iteration": iteration, "accuracy": score}):
            self.best = {k: v.clone() for k, v in synthetic.tensors().items()}


def save_checkpoint(out: Path, iteration: int, synthetic: SyntheticSet, optimizer, scheduler, log: list,
                    selection: Selection, seconds: float) -> None:
    """Seal the state after ``iteration`` outer iterations; ``seconds``: the outer loop's wall time so far."""
    def write(folder: Path) -> None:
        save_file(synthetic.tensors(), folder / "synthetic.safetensors")
        if selection.best is not None:
            save_file(selection.best, folder / "best.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   folder / "optimizer.pt")

    save_checkpoint_folder(out, iteration, write, {"iteration": iteration, "log": log, "checks": selection.checks,
                                                   "seconds": round(seconds, 3)})


def load_checkpoint(folder: Path, soft: bool) -> tuple[int, SyntheticSet, dict, list, Selection]:
    """What :func:`save_checkpoint` sealed; the dict is the optimizer and scheduler state plus ``seconds``."""
    synthetic = SyntheticSet.from_tensors(load_file(folder / "synthetic.safetensors"), soft)
    state = json.loads((folder / "state.json").read_text())
    best = load_file(folder / "best.safetensors") if (folder / "best.safetensors").exists() else None
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    return (state["iteration"], synthetic, {**optimizer, "seconds": state.get("seconds", 0.0)}, state["log"],
            Selection(state.get("checks"), best))


# --- evaluation ------------------------------------------------------------------------------------------------------

@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    return correct / len(labels)


def train_adam(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, lr: float, steps: int,
               batch_size: int, seed: int) -> torch.nn.Module:
    """Plain supervised training (the baselines): ``steps`` Adam steps on seeded random batches (all of a set no
    larger than ``batch_size``)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        if len(labels) <= batch_size:
            x, y = images, labels
        else:
            index = torch.randint(len(labels), (batch_size,), generator=generator)
            x, y = images[index], labels[index]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def random_subset(labels: torch.Tensor, count: int, classes: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` real training images, as even over the classes as ``count`` allows (seeded)."""
    generator = torch.Generator().manual_seed(seed_of(seed, "subset"))
    order = torch.randperm(classes, generator=generator)
    per_class = [count // classes + (1 if rank < count % classes else 0) for rank in range(classes)]
    chosen = []
    for rank, label in enumerate(order.tolist()):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class[rank]]])
    return torch.cat(chosen).sort().values


def _inits(recipe: DatasetDistillationRecipe) -> list[int]:
    """The seeds of the evaluation's random initialisations (never the fixed θ_0's)."""
    return [seed_of(recipe.training.seed, "evaluation", k) for k in range(recipe.evaluation.models)]


def _latency(model: torch.nn.Module, images: torch.Tensor, cfg: DistillEvaluationConfig) -> dict:
    return {str(b): measure_latency(model, {"x": images[:b]}, repeats=cfg.latency_repeats)
            for b in cfg.latency_batch_sizes}


def _scores(train, recipe: DatasetDistillationRecipe, data: ImageData) -> dict:
    """``train(model, seed) -> model`` applied from the fixed θ_0 and from each random initialisation; accuracies."""
    images, labels = data[recipe.evaluation.split]
    classes = len(data.classes)
    fixed = accuracy(train(build_model(recipe.learner, data.shape, classes, recipe.training.seed), 0), images,
                     labels)
    randoms = [accuracy(train(build_model(recipe.learner, data.shape, classes, seed), k + 1), images, labels)
               for k, seed in enumerate(_inits(recipe))]
    primary = fixed if recipe.distill.init == "fixed" else statistics.fmean(randoms)
    return {"metrics": {"accuracy": primary, "accuracy_random_inits": statistics.fmean(randoms)},
            "accuracy_fixed_init": fixed,
            "accuracy_random_inits_std": statistics.stdev(randoms) if len(randoms) > 1 else None}


def validation_score(recipe: DatasetDistillationRecipe, data: ImageData, synthetic: SyntheticSet) -> float:
    """``keep: best``'s check: validation accuracy of a learner trained on the set from the fixed θ_0 (``init:
    random``: the mean over the evaluation's random initialisations)."""
    images, labels = data["validation"]
    seeds = [recipe.training.seed] if recipe.distill.init == "fixed" else _inits(recipe)
    train = _trainer(recipe, synthetic)
    return statistics.fmean(accuracy(train(build_model(recipe.learner, data.shape, len(data.classes), seed), k),
                                     images, labels) for k, seed in enumerate(seeds))


def _trainer(recipe: DatasetDistillationRecipe, synthetic: SyntheticSet):
    """``train(model, k) -> model``: a fresh learner trained on the synthetic set by its learned steps."""
    rates, targets = synthetic.learning_rates.detach(), synthetic.labels.detach()
    return lambda model, k: train_on_synthetic(model, synthetic.samples, targets, rates, recipe.distill.steps)


def full_data_scores(recipe: DatasetDistillationRecipe, data: ImageData) -> dict:
    """The learner trained on all real training images; computed once per data, seed and settings (stored)."""
    cfg = recipe.evaluation
    key = digest({"task": TASK, "data": recipe.data.model_dump(), "model": recipe.learner,
                  "seed": recipe.training.seed, "init": recipe.distill.init, "models": cfg.models,
                  "epochs": cfg.full_epochs, "lr": cfg.full_learning_rate, "split": cfg.split, "kdkit": __version__})
    store = ArtifactStore()
    found = store.get_json("evaluations", key)
    if found is not None:
        return found
    images, labels = data["train"]
    steps = cfg.full_epochs * math.ceil(len(labels) / 128)
    scores = _scores(lambda model, k: train_adam(model, images, labels, lr=cfg.full_learning_rate, steps=steps,
                                                 batch_size=128, seed=seed_of(recipe.training.seed, "full", k)),
                     recipe, data)
    store.put_json("evaluations", key, scores)
    return scores


def evaluate(recipe: DatasetDistillationRecipe, data: ImageData, synthetic: SyntheticSet,
             selected: dict | None = None) -> dict:
    """The report's results: the full-data model (teacher row), the distilled set's models (student) and the random
    real subset (variant)."""
    cfg, dist = recipe.evaluation, recipe.distill
    images, labels = data[cfg.split]
    classes = len(data.classes)
    probe = build_model(recipe.learner, data.shape, classes, recipe.training.seed)
    latency, params, n = _latency(probe, images, cfg), count_parameters(probe), len(labels)
    train_x, train_y = data["train"]
    full = full_data_scores(recipe, data)
    rates = synthetic.learning_rates.detach()
    distilled = _scores(_trainer(recipe, synthetic), recipe, data)
    subset = random_subset(train_y, dist.samples, classes, recipe.training.seed)
    baseline = _scores(lambda model, k: train_adam(model, train_x[subset], train_y[subset],
                                                   lr=cfg.full_learning_rate, steps=cfg.subset_steps,
                                                   batch_size=len(subset), seed=0), recipe, data)
    entry = {"params": params, "n": n, "latency": latency}
    noun = "sentences" if data.text is not None else "images"
    return {
        "task": TASK, "primary_metric": "accuracy", "split": cfg.split, "dm_alpha": cfg.dm_alpha,
        "teacher": {**entry, **full, "name": f"{recipe.learner}, all {len(train_y):,} real training {noun}"},
        "student": {**entry, **distilled, "name": f"{recipe.learner}, {dist.samples} distilled {noun} "
                                                  f"({dist.labels} labels)"},
        "variants": {"random real subset": {**entry, **baseline,
                                            "name": f"{recipe.learner}, {dist.samples} random real {noun}"}},
        "distilled": {"samples": dist.samples, "classes": classes, "real_training_examples": len(train_y),
                      "learning_rates": rates.tolist(), "init": dist.init, "labels": dist.labels,
                      "kept": recipe.training.keep,
                      **({"selected_iteration": selected["iteration"],
                          "selected_validation_accuracy": selected["accuracy"]} if selected else {})},
    }


# --- the saved set ----------------------------------------------------------------------------------------------------

def save_distilled(folder: Path, synthetic: SyntheticSet, recipe: DatasetDistillationRecipe, data: ImageData) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(synthetic.tensors(), folder / "distilled.safetensors")
    meta = {"dataset": recipe.data.dataset, "classes": list(data.classes), "shape": list(data.shape),
            "mean": data.mean, "std": data.std, "steps": recipe.distill.steps, "epochs": recipe.distill.epochs,
            "labels": recipe.distill.labels, "init": recipe.distill.init, "model": recipe.learner,
            "seed": recipe.training.seed, "kdkit": __version__}
    if data.text is not None:  # for display only: the nearest vocabulary word at each position
        meta["nearest_words"] = data.text.nearest_words(synthetic.samples)
        meta["embedding"] = recipe.data.embedding
    (folder / "distilled.json").write_text(json.dumps(meta, indent=1) + "\n")
    if data.text is None:
        grid_png(folder / "grid.png", synthetic, data)


def load_distilled(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A saved distilled set: its tensors (``images``, ``labels``, ``learning_rates``) and ``distilled.json``."""
    folder = Path(folder)
    try:
        return load_file(folder / "distilled.safetensors"), json.loads((folder / "distilled.json").read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"'{folder}' holds no readable distilled set (distilled.safetensors + distilled.json): "
                        f"{err}") from None


def train_on_distilled(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """``model`` trained in place on the distilled set saved in ``folder`` by its learned steps."""
    tensors, meta = load_distilled(folder)
    return train_on_synthetic(model, tensors["images"], tensors["labels"], tensors["learning_rates"], meta["steps"])


def grid_png(path: Path, synthetic: SyntheticSet, data: ImageData) -> None:
    """The distilled images in a grid, each titled with its top two labels and their weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = (synthetic.samples.detach() * data.std + data.mean).clamp(0, 1)
    labels = synthetic.labels.detach()
    n = images.shape[0]
    cols = min(n, 10)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        top = labels[i].topk(min(2, labels.shape[1]))
        ax.set_title("\n".join(f"{data.classes[c][:8]} {w:.2f}" for w, c in zip(top.values.tolist(),
                                                                               top.indices.tolist()) if w > 0.005),
                     fontsize=7)
    save_figure(fig, path, dpi=100)


# --- the task ---------------------------------------------------------------------------------------------------------

@register
class DatasetDistillationTask(Task):
    """Soft-label dataset distillation of an image or text set (see the module docstring)."""

    name = TASK
    recipe = DatasetDistillationRecipe
    primary_metric = "accuracy"
    pipeline_tag = "image-classification"

    def compare_figures(self, board, out):
        from kdkit.tasks.dataset_distillation.figures import samples_figure

        path = samples_figure(board, out / "samples.png")
        return [] if path is None else [("test accuracy vs training samples", path)]

    def run(self, recipe: DatasetDistillationRecipe, *, resume: bool = False, overwrite: bool = False,
            force: bool = False) -> dict:
        out = check_run_folder(recipe, resume=resume, force=force, overwrite=overwrite)
        data = load_data(recipe.data)
        classes, dist = len(data.classes), recipe.distill
        if dist.samples > len(data["train"][1]):
            raise ConfigError(f"recipe key 'distill.samples': {dist.samples} is more than the "
                              f"{len(data['train'][1])} real training examples it would distil")
        if not resume:
            open_run_folder(out, recipe, overwrite=overwrite)
        synthetic = SyntheticSet.new(dist, data.shape, classes, recipe.training.seed)
        cfg = recipe.training
        optimizer = torch.optim.Adam(synthetic.learnable, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.decay_every, cfg.decay_factor)
        start, log, selection, before = 0, [], Selection(), 0.0
        if resume:
            start, synthetic, state, log, selection = load_checkpoint(last_complete_checkpoint(out / "checkpoints"),
                                                                      dist.labels == "soft")
            optimizer = torch.optim.Adam(synthetic.learnable, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.decay_every, cfg.decay_factor)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            before = state["seconds"]
        iteration, started = start, time.perf_counter()
        try:
            with progress(total=cfg.iterations, initial=start, desc="distilling the data set", unit="it") as bar:
                for iteration in range(start, cfg.iterations):
                    self._step(recipe, data, synthetic, optimizer, scheduler, iteration, log)
                    bar.update(1)
                    if log and log[-1]["iteration"] == iteration + 1:
                        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}", refresh=False)
                    last = iteration + 1 == cfg.iterations
                    if cfg.keep == "best" and ((iteration + 1) % cfg.eval_steps == 0 or last):
                        selection.offer(iteration + 1, validation_score(recipe, data, synthetic), synthetic)
                    if (iteration + 1) % cfg.save_steps == 0 or last:
                        save_checkpoint(out, iteration + 1, synthetic, optimizer, scheduler, log, selection,
                                        before + time.perf_counter() - started)
        except KeyboardInterrupt as err:
            raise RunInterrupted(iteration, last_complete_checkpoint(out / "checkpoints") is not None) from err
        seconds = before + time.perf_counter() - started
        (out / "metrics.json").write_text(json.dumps(log, indent=1) + "\n")
        if cfg.keep == "best" and selection.best is not None:
            (out / "validation.json").write_text(json.dumps(selection.checks, indent=1) + "\n")
            from kdkit.tasks.dataset_distillation.figures import validation_figure

            validation_figure(selection.checks, selection.chosen, out / "validation.png")
            synthetic = SyntheticSet.from_tensors(selection.best, synthetic.soft)
        save_distilled(out / DISTILLED, synthetic, recipe, data)
        results = evaluate(recipe, data, synthetic, selection.chosen)
        check_finite_metrics({k: results[k] for k in ("teacher", "student")} | results["variants"],
                             recipe.evaluation.split)
        report = {**results, "recipe": recipe.name, "student_dir": str(out / DISTILLED),
                  "train_seconds": round(seconds, 3)}
        write_report(out, report)
        return report

    @staticmethod
    def _step(recipe, data, synthetic: SyntheticSet, optimizer, scheduler, iteration: int, log: list) -> None:
        cfg = recipe.training
        model = initial_parameters(recipe, data, iteration)
        params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
        real, labels = real_batch(data, cfg.batch_size, cfg.seed, iteration)
        loss = distillation_loss(model, params, synthetic.samples, synthetic.labels, synthetic.learning_rates,
                                 recipe.distill.steps, real, labels)
        if not torch.isfinite(loss):
            raise RunFault(f"the outer loss is {loss.item()} at iteration {iteration + 1}; the synthetic set "
                           f"diverged (try a smaller training.learning_rate or distill.lr_init)")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if synthetic.soft:
            with torch.no_grad():
                synthetic.labels.copy_(project_to_simplex(synthetic.labels))
        if (iteration + 1) % cfg.logging_steps == 0 or iteration == 0:
            log.append({"iteration": iteration + 1, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                        "learning_rates": synthetic.learning_rates.detach().tolist()})
