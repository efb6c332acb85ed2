"""``task: multimodal``: a multimodal teacher distilled into a smaller multimodal student, with modality-specific
distillation (MSD; Jin, Sanjabi, Nie, Tan, Ren & Firooz, Findings of EMNLP 2021; SPEC §11; issue 19).

- **Models** (:mod:`.encoders`): one encoder per modality (image: EfficientNet-Lite0 with ImageNet weights or a
  small CNN; text: any HF encoder, mean-pooled, optionally cut to ``text_layers``; tabular: embeddings and an MLP),
  their features concatenated into a two-layer fusion head. The teacher (default EfficientNet-Lite0 + MPNet-base)
  is fine-tuned first with CE on the training split (``teacher.finetune``; stored once in the artifact store) or
  read from a saved folder (``teacher.model``); the student (default small CNN + MiniLM-L6) has the same interface.
- **Losses**: ``ce`` and ``kd`` on the full input, and ``msd`` (:mod:`kdkit.terms.multimodal`): the student's and
  teacher's predictions on each single-modality view (only modality m present, the others masked by the rule of
  their kind, :func:`~kdkit.tasks.multimodal.encoders.masked_inputs`), weighted per modality (equal, population
  or instance saliency, or learned by a meta step). MSD as the paper has it is ``[ce, kd, msd]``.
- **Teacher cost**: the teacher's logits on the full input, on every single-modality view and on every view with
  one modality removed (the saliency's) are computed once for the training split and kept in the artifact store
  (keyed by the teacher's weights, the examples and the input settings); ``teacher.cache: off`` runs the teacher
  live at every step instead. Saliency s_m(x) = ½‖σ(z_t(x)) − σ(z_t(x without m))‖₁; the population saliency is its
  mean over the training split.
- **Evaluation** on ``evaluation.split``: accuracy (primary), macro-F1 and ECE of teacher and student, the
  accuracy of each on every single-modality view (``<modality>_only_accuracy``), the teacher's mean saliency per
  modality on the split (``saliency``) and on the training split (``saliency_train``, what population weights
  use), the MSD weights the student was trained with (mean per modality on the split), parameters and latency.
- **Export**: ``student/`` holds ``model.safetensors``, ``multimodal.json`` (encoders, modalities, labels, the
  tabular standardisation and vocabularies) and each text encoder's config and tokenizer; :func:`load_saved_model`
  reads it back offline.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, set_seed

from kdkit import __version__
from kdkit.capture import Representations
from kdkit.config import Recipe, TrainConfig
from kdkit.engine.pipeline import Prepared, TrainerTask, stored_teacher
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import ConfigError, DataError, ModelError
from kdkit.loading import load_model
from kdkit.losses import modality_saliency
from kdkit.report.calibration import calibration_error
from kdkit.report.evaluate import count_parameters, measure_latency
from kdkit.schema import TOKENS_MAX, Count, LayerIndex, Seed, Strict
from kdkit.signals.cache import fingerprint_model
from kdkit.store import ArtifactStore, digest
from kdkit.students.layers import student_from_teacher_layers
from kdkit.tasks import register
from kdkit.tasks.multimodal.data import (NAMED, Modality, MultimodalData, load_multimodal_files,
                                         load_named_multimodal)
from kdkit.tasks.multimodal.encoders import (FusionClassifier, ImageEncoder, TabularEncoder, TabularSpec,
                                             TextEncoder, empty_text, masked_view, read_images)
from kdkit.terms import build_terms
from kdkit.terms.logits import CELoss

TASK = "multimodal"
PER_QUERY = "per_query.json"


# --- the recipe -------------------------------------------------------------------------------------------------------

class ModalityConfig(Strict):
    """A modality of user data: ``kind`` image or text with its ``column``, or tabular with ``numeric`` and
    ``categorical`` columns."""

    kind: Literal["image", "text", "tabular"]
    column: str | None = Field(None, min_length=1, max_length=256)
    numeric: list[str] = Field(default_factory=list, max_length=1024)
    categorical: list[str] = Field(default_factory=list, max_length=1024)

    @model_validator(mode="after")
    def _columns(self) -> "ModalityConfig":
        if self.kind == "tabular":
            if self.column is not None or not (self.numeric or self.categorical):
                raise ValueError("a tabular modality names numeric and/or categorical columns, not 'column'")
        elif self.column is None or self.numeric or self.categorical:
            raise ValueError(f"an {self.kind} modality names its one 'column' (not numeric/categorical)")
        return self

    def modality(self) -> Modality:
        columns = () if self.column is None else (self.column,)
        return Modality(self.kind, columns, tuple(self.numeric), tuple(self.categorical))


class MultimodalDataConfig(Strict):
    """A named set (``dataset``: ``emoji``, ``clothing_reviews`` with ``label`` recommended or rating) or user files
    (``train_file`` [``validation_file``, ``test_file``] csv/jsonl with ``modalities`` and ``label_column``). Texts
    are cut to ``max_length`` word pieces, images resized to ``image_size``; ``max_train_samples`` keeps that many
    training examples (a seeded choice), for teacher and student alike."""

    dataset: Literal[tuple(NAMED)] | None = None
    label: Literal["recommended", "rating"] = "recommended"
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    modalities: dict[str, ModalityConfig] | None = Field(None, max_length=16)
    label_column: str = Field("label", min_length=1, max_length=256)
    max_length: int = Field(64, gt=2, le=TOKENS_MAX)
    image_size: int = Field(72, ge=8, le=1024)
    max_train_samples: Count | None = None
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_source(self) -> "MultimodalDataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (emoji, clothing_reviews) or data.train_file")
        if self.train_file is not None and not self.modalities:
            raise ValueError("data.train_file needs data.modalities: {name: {kind, column | numeric/categorical}}")
        if self.dataset is not None and self.modalities is not None:
            raise ValueError(f"data.modalities are fixed by the named set '{self.dataset}'; give them with "
                             f"data.train_file only")
        return self


class EncodersConfig(Strict):
    """A multimodal model: ``image`` encoder (``efficientnet-lite0``, ImageNet weights; or ``small_cnn`` of
    ``image_width`` channels), ``text`` encoder (a named model, folder or hub id; ``text_layers`` keeps those blocks,
    0-based), tabular ``tabular_embed`` dims per category and a ``tabular_dim`` MLP, a fusion head of ``hidden``
    units with ``dropout``. Modalities the data lacks are ignored."""

    image: Literal["efficientnet-lite0", "small_cnn"] = "small_cnn"
    image_width: int = Field(32, ge=1, le=4096)
    text: str = Field("minilm-l6", min_length=1, max_length=4096)
    text_layers: list[LayerIndex] | None = Field(None, max_length=256)
    tabular_embed: int = Field(8, ge=1, le=4096)
    tabular_dim: int = Field(64, ge=1, le=65536)
    hidden: int = Field(256, ge=1, le=65536)
    dropout: float = Field(0.1, ge=0, lt=1)


class MultimodalTeacherConfig(EncodersConfig):
    """The teacher's encoders (defaults EfficientNet-Lite0 + MPNet-base), fine-tuned with CE as ``finetune`` says
    (once, stored), or ``model``: a folder a previous run saved (then ``finetune`` must be null). ``cache``: ``auto``
    computes its signals on every view once; ``off`` runs it at every step."""

    image: Literal["efficientnet-lite0", "small_cnn"] = "efficientnet-lite0"
    text: str = Field("mpnet-base", min_length=1, max_length=4096)
    tabular_dim: int = Field(128, ge=1, le=65536)
    model: str | None = None
    finetune: TrainConfig | None = Field(default_factory=lambda: TrainConfig(epochs=3, learning_rate=1e-4,
                                                                            report_to=["none"]))
    cache: Literal["auto", "off"] = "auto"

    @model_validator(mode="after")
    def _source(self) -> "MultimodalTeacherConfig":
        if (self.model is None) == (self.finetune is None):
            raise ValueError("give exactly one of teacher.finetune (fine-tune the encoders) or teacher.model (a "
                             "saved multimodal teacher folder; with teacher.finetune: null)")
        return self


class MultimodalRecipe(Recipe):
    task: str = TASK
    data: MultimodalDataConfig
    teacher: MultimodalTeacherConfig | None = Field(default_factory=MultimodalTeacherConfig)
    student: EncodersConfig = Field(default_factory=EncodersConfig)

    @model_validator(mode="after")
    def _teacher_given_where_needed(self) -> "MultimodalRecipe":
        for i, term in enumerate(self.losses):  # which losses the task takes: kdkit.terms.multimodal
            if self.teacher is None and term.name != "ce":
                raise ConfigError(f"recipe key 'teacher' is missing but losses[{i}] '{term.name}' reads the teacher")
        if self.generations is not None:
            raise ConfigError("recipe key 'generations': the multimodal task has no born-again generations")
        return self

    @model_validator(mode="after")
    def _student_has_what_losses_read(self) -> "MultimodalRecipe":
        return self

    def student_needs_teacher(self) -> bool:
        return False


# --- data and inputs --------------------------------------------------------------------------------------------------

def load_data(cfg: MultimodalDataConfig) -> MultimodalData:
    """The recipe's splits; ``max_train_samples`` keeps a seeded choice of training examples."""
    if cfg.dataset is not None:
        data = load_named_multimodal(cfg.dataset, cfg.seed,
                                     **({"label": cfg.label} if cfg.dataset == "clothing_reviews" else {}))
    else:
        data = load_multimodal_files(cfg.train_file, {n: m.modality() for n, m in cfg.modalities.items()},
                                     label_column=cfg.label_column, validation_file=cfg.validation_file,
                                     test_file=cfg.test_file, seed=cfg.seed)
    train = data.splits["train"]
    if len(train) == 0:
        raise DataError("the training split has no examples")
    if cfg.max_train_samples and len(train) > cfg.max_train_samples:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[:cfg.max_train_samples])
        data.splits["train"] = train.iloc[keep].reset_index(drop=True)
    return data


def tabular_specs(data: MultimodalData) -> dict[str, TabularSpec]:
    return {name: TabularSpec.from_train(data.splits["train"], m) for name, m in data.modalities.items()
            if m.kind == "tabular"}


def kinds_of(data: MultimodalData) -> dict[str, str]:
    return {name: m.kind for name, m in data.modalities.items()}


def row_keys(frame, modalities: dict[str, Modality]) -> list[str]:
    """A digest of each example's modality values and label (what ``--resume`` compares)."""
    columns = [c for m in modalities.values() for c in (*m.columns, *m.numeric, *m.categorical)] + ["label"]
    return [digest([str(v) for v in row], size=8) for row in frame[columns].itertuples(index=False)]


def build_inputs(data: MultimodalData, tokenizers: dict[str, object], specs: dict[str, TabularSpec], *,
                 max_length: int, image_size: int) -> dict[str, dict[str, dict]]:
    """Each split's tensors per role: ``{split: {role: {modality: {name: (N, ...)}}}}``; images and tabular inputs
    are read once and shared by the roles, texts tokenized by each role's tokenizer (padded to the split's longest)."""
    out = {}
    for split, frame in data.splits.items():
        shared, roles = {}, {role: {} for role in tokenizers}
        for name, modality in data.modalities.items():
            if modality.kind == "image":
                shared[name] = {"pixels": read_images(list(frame[modality.columns[0]]), image_size)}
            elif modality.kind == "tabular":
                shared[name] = specs[name].inputs(frame)
            else:
                for role, tokenizer in tokenizers.items():
                    encoded = tokenizer(list(frame[modality.columns[0]]), max_length=max_length, truncation=True,
                                        padding=True, return_tensors="pt")
                    roles[role][name] = {"input_ids": encoded["input_ids"],
                                         "attention_mask": encoded["attention_mask"]}
        out[split] = {role: {name: shared.get(name) or roles[role][name] for name in data.modalities}
                      for role in tokenizers}
    return out


def index_dataset(data: MultimodalData, split: str) -> Dataset:
    frame = data.splits[split]
    return Dataset.from_dict({"index": list(range(len(frame))), "labels": [int(v) for v in frame["label"]],
                              "key": row_keys(frame, data.modalities)})


def _rows(inputs: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    rows = {name: value[index] for name, value in inputs.items()}
    if "attention_mask" in rows:  # trim a text's padding to the batch's longest
        length = max(int(rows["attention_mask"].sum(1).max()), 1)
        rows = {name: value[:, :length] for name, value in rows.items()}
    return rows


class MultimodalCollator:
    """Examples (``{"index", "labels"}`` rows of :func:`index_dataset`) to a batch: ``index``, ``labels`` and, per
    role, ``{modality: inputs}`` gathered from the split's tensors."""

    def __init__(self, tensors: dict[str, dict], labels: list[int]):
        self.tensors, self.labels = tensors, torch.tensor(labels, dtype=torch.long)

    def __call__(self, features: list[dict]) -> dict:
        index = torch.tensor([int(f["index"]) for f in features], dtype=torch.long)
        batch = {"index": index, "labels": self.labels[index]}
        for role, inputs in self.tensors.items():
            batch[role] = {name: _rows(value, index) for name, value in inputs.items()}
        return batch


# --- models -----------------------------------------------------------------------------------------------------------

def build_model(cfg: EncodersConfig, data: MultimodalData, specs: dict[str, TabularSpec], key: str
                ) -> tuple[FusionClassifier, object]:
    """A fusion classifier with ``cfg``'s encoder for each modality of ``data``, and its tokenizer (None without
    text); ``key`` names the recipe section in errors."""
    encoders, tokenizer = {}, None
    for name, modality in data.modalities.items():
        if modality.kind == "image":
            encoders[name] = ImageEncoder(cfg.image, cfg.image_width)
        elif modality.kind == "tabular":
            encoders[name] = TabularEncoder(specs[name], cfg.tabular_embed, cfg.tabular_dim)
        else:
            model, tokenizer = load_model(cfg.text, AutoModel, f"{key}.text")
            if cfg.text_layers is not None:
                model = student_from_teacher_layers(model, cfg.text_layers)
            encoders[name] = TextEncoder(model)
    return FusionClassifier(encoders, len(data.label_names), cfg.hidden, cfg.dropout), tokenizer


SAVED = "multimodal.json"


def save_model(model: FusionClassifier, tokenizer, folder: Path, cfg: EncodersConfig, data: MultimodalData,
               specs: dict[str, TabularSpec], meta: dict | None = None) -> Path:
    """Write a fusion classifier in kdkit's multimodal format (see the module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    for name, encoder in model.encoders.items():
        if isinstance(encoder, TextEncoder):
            encoder.model.config.save_pretrained(folder / "text" / name)
            tokenizer.save_pretrained(folder / "text" / name)
    tabular = {name: {"numeric": list(s.numeric), "categorical": list(s.categorical), "mean": s.mean.tolist(),
                      "std": s.std.tolist(), "vocab": [list(v) for v in s.vocab]} for name, s in specs.items()}
    info = {"format": "kdkit-multimodal", "kdkit": __version__, "encoders": cfg.model_dump(exclude={
                "model", "finetune", "cache"}),
            "modalities": {n: asdict(m) for n, m in data.modalities.items()}, "label_names": list(data.label_names),
            "tabular": tabular, **(meta or {})}
    (folder / SAVED).write_text(json.dumps(info, indent=1) + "\n")
    return folder


def load_saved_model(folder: str | Path, key: str = "model") -> tuple[FusionClassifier, object, dict]:
    """A model :func:`save_model` wrote: ``(model, tokenizer or None, its multimodal.json)``, offline."""
    folder = Path(folder)
    try:
        info = json.loads((folder / SAVED).read_text())
    except (OSError, ValueError):
        raise ModelError(f"recipe key '{key}': '{folder}' holds no kdkit multimodal model ({SAVED})") from None
    cfg = EncodersConfig(**info["encoders"])
    encoders, tokenizer = {}, None
    for name, m in info["modalities"].items():
        if m["kind"] == "image":
            encoders[name] = ImageEncoder(cfg.image, cfg.image_width, pretrained=False)
        elif m["kind"] == "tabular":
            t = info["tabular"][name]
            spec = TabularSpec(tuple(t["numeric"]), tuple(t["categorical"]), np.array(t["mean"]),
                               np.array(t["std"]), tuple(tuple(v) for v in t["vocab"]))
            encoders[name] = TabularEncoder(spec, cfg.tabular_embed, cfg.tabular_dim)
        else:
            encoders[name] = TextEncoder(AutoModel.from_config(AutoConfig.from_pretrained(folder / "text" / name)))
            tokenizer = AutoTokenizer.from_pretrained(folder / "text" / name)
    model = FusionClassifier(encoders, len(info["label_names"]), cfg.hidden, cfg.dropout)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), tokenizer, info


# --- teacher signals --------------------------------------------------------------------------------------------------

@torch.no_grad()
def teacher_views(model: nn.Module, inputs: dict, kinds: dict[str, str], empty: dict) -> dict[str, Tensor]:
    """The teacher's logits on a batch: ``full`` ``(B, C)``, ``only`` and ``removed`` ``(M, B, C)`` (view m = only
    modality m present / modality m removed), float32."""
    was_training = model.training
    model.eval()
    try:
        out = model(inputs, masked_view(inputs, kinds, empty)).float()
    finally:
        model.train(was_training)
    count = len(kinds)
    return {"full": out[0], "only": out[1:count + 1], "removed": out[count + 1:]}


def _signals(views: dict[str, Tensor], population: Tensor) -> Representations:
    return Representations(logits=views["full"], modules={
        "views": views["only"], "saliency": modality_saliency(views["full"], views["removed"]),
        "population": population})


class CachedViews:
    """Teacher signals read from the views computed once for the training split (rows by ``batch["index"]``)."""

    def __init__(self, views: dict[str, Tensor]):
        self.views = views
        self.population = modality_saliency(views["full"], views["removed"]).mean(0)

    def to(self, device) -> "CachedViews":
        self.views = {k: v.to(device) for k, v in self.views.items()}
        self.population = self.population.to(device)
        return self

    def __call__(self, batch: dict) -> Representations:
        i = batch["index"]
        return _signals({"full": self.views["full"][i], "only": self.views["only"][:, i],
                         "removed": self.views["removed"][:, i]}, self.population)


class LiveViews:
    """Teacher signals from the teacher run on each batch (``teacher.cache: off``)."""

    def __init__(self, teacher: nn.Module, kinds: dict[str, str], empty: dict, population: Tensor):
        self.teacher, self.kinds, self.empty, self.population = teacher, kinds, empty, population

    def to(self, device) -> "LiveViews":
        self.teacher.to(device)
        self.population = self.population.to(device)
        return self

    def __call__(self, batch: dict) -> Representations:
        return _signals(teacher_views(self.teacher, batch["teacher"], self.kinds, self.empty), self.population)


def all_views(model: nn.Module, tensors: dict, labels: list[int], kinds: dict[str, str], empty: dict,
              batch_size: int, device: str = "cpu") -> dict[str, Tensor]:
    """:func:`teacher_views` over a whole split (``tensors`` = one role's ``{modality: inputs}``), on CPU after."""
    from kdkit.terms.multimodal import to_device

    collate = MultimodalCollator({"model": tensors}, labels)
    parts = []
    model.to(device)
    for start in range(0, len(labels), batch_size):
        batch = collate([{"index": i} for i in range(start, min(start + batch_size, len(labels)))])
        parts.append({k: v.cpu() for k, v in teacher_views(model, to_device(batch["model"], device), kinds,
                                                            to_device(empty, device)).items()})
    return {"full": torch.cat([p["full"] for p in parts]), "only": torch.cat([p["only"] for p in parts], 1),
            "removed": torch.cat([p["removed"] for p in parts], 1)}


# --- the task ---------------------------------------------------------------------------------------------------------

def _teacher_views_of_train(prep: Prepared) -> dict[str, Tensor]:
    """Every view of the teacher on the training split (:func:`all_views`)."""
    return all_views(prep.teacher, prep.extras["inputs"]["train"]["teacher"], list(prep.data.splits["train"]["label"]),
                     prep.extras["kinds"], prep.extras["empty"]["teacher"], prep.recipe.training.eval_batch_size,
                     _device())


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@register
class MultimodalTask(TrainerTask):
    """Multimodal classification distilled with KD and MSD (see the module docstring)."""

    name = TASK
    recipe = MultimodalRecipe
    primary_metric = "accuracy"
    pipeline_tag = "other"
    supervised_loss = "ce"

    def compare_figures(self, board, out):
        from kdkit.tasks.multimodal.figures import views_figure

        path = views_figure(board, out / "views.png")
        return [] if path is None else [("accuracy on the full input and on each modality alone; MSD weights", path)]

    # --- preparation ---------------------------------------------------------------------------------------------
    def prepare_all(self, recipe: MultimodalRecipe):
        training_arguments(recipe.training, recipe.resolved_output_dir() / "checkpoints")  # a bad extra fails here
        data = load_data(recipe.data)
        specs = tabular_specs(data)
        kinds = kinds_of(data)
        teacher = teacher_tokenizer = teacher_path = None
        if recipe.teacher is not None:
            teacher_path = recipe.teacher.model or self.finetune_teacher(recipe, data, specs)
            teacher, teacher_tokenizer, info = load_saved_model(teacher_path, "teacher.model")
            if info["label_names"] != list(data.label_names) or set(info["modalities"]) != set(kinds):
                raise ModelError(f"recipe key 'teacher.model': '{teacher_path}' was trained on the labels "
                                 f"{info['label_names']} and modalities {list(info['modalities'])}, not this data's "
                                 f"{list(data.label_names)} and {list(kinds)}")
        set_seed(recipe.training.seed)
        student, tokenizer = build_model(recipe.student, data, specs, "student")
        roles = {"student": tokenizer} | ({"teacher": teacher_tokenizer} if teacher is not None else {})
        empty = {role: {name: empty_text(tok) for name, kind in kinds.items() if kind == "text"}
                 for role, tok in roles.items()}
        inputs = build_inputs(data, roles, specs, max_length=recipe.data.max_length,
                              image_size=recipe.data.image_size)
        module = DistillationModule(student, build_terms(recipe.losses, teacher, student),
                                    forward=self.student_forward(recipe, kinds, empty["student"]))
        prep = Prepared(recipe, data, tokenizer, teacher_tokenizer, teacher, student, module,
                        extras={"inputs": inputs, "kinds": kinds, "empty": empty, "specs": specs,
                                "teacher_path": teacher_path})
        splits = DatasetDict({split: index_dataset(data, split) for split in data.splits})
        self.setup_terms(prep, splits)
        return prep, splits, teacher_path

    def finetune_teacher(self, recipe: MultimodalRecipe, data: MultimodalData, specs=None) -> str:
        """Fine-tune the teacher's encoders and fusion head with CE on the training split, once (stored)."""
        cfg = recipe.teacher
        specs = specs if specs is not None else tabular_specs(data)
        key = digest({"encoders": cfg.model_dump(exclude={"model", "finetune", "cache"}),
                      "data": recipe.data.model_dump(), "labels": list(data.label_names),
                      "finetune": cfg.finetune.model_dump(), "kdkit": __version__})
        meta: dict = {"key": key}
        kinds = kinds_of(data)

        def build(work: Path) -> None:
            set_seed(cfg.finetune.seed)
            model, tokenizer = build_model(cfg, data, specs, "teacher")
            roles = {"teacher": tokenizer}
            inputs = build_inputs(data, roles, specs, max_length=recipe.data.max_length,
                                  image_size=recipe.data.image_size)
            empty = {name: empty_text(tokenizer) for name, kind in kinds.items() if kind == "text"}
            module = DistillationModule(model, build_terms([CELoss(name="ce")], None, model),
                                        forward=self.student_forward(recipe, kinds, empty, role="teacher",
                                                                     views=False))
            args = training_arguments(cfg.finetune, work / "checkpoints", save_strategy="no")
            train = data.splits["train"]
            DistillationTrainer(module, args, train_dataset=index_dataset(data, "train"),
                                data_collator=MultimodalCollator(inputs["train"], list(train["label"]))).train()
            scores = score_model(model, inputs["validation"]["teacher"], list(data.splits["validation"]["label"]),
                                 kinds, empty, cfg.finetune.eval_batch_size)
            meta["validation"] = scores["metrics"]
            save_model(model, tokenizer, work, cfg, data, specs, {"validation": scores["metrics"]})
            shutil.rmtree(work / "checkpoints", ignore_errors=True)

        label = f"multimodal-{recipe.data.dataset or 'files'}-{cfg.image}-{cfg.text}"
        return stored_teacher(label, key, build, f"fine-tuning the multimodal teacher ({_describe(cfg, kinds)})",
                              meta=meta)

    @staticmethod
    def student_forward(recipe: MultimodalRecipe, kinds: dict[str, str], empty: dict, *, role: str = "student",
                        views: bool | None = None):
        """The forward the trained module runs: the model on the full input and, when ``msd`` is a loss, on each
        single-modality view (``modules["views"]`` ``(M, B, C)``; with learned weights also ``view_inputs``, the
        batch and its masked form, for the meta step's look-ahead)."""
        msd = [term for term in recipe.losses if term.name == "msd"]
        views = bool(msd) if views is None else views
        learned = any(term.weighting == "learned" for term in msd)

        def forward(capture, batch: dict) -> Representations:
            inputs = batch[role]
            if not views:
                return capture(inputs=inputs)
            masked = masked_view(inputs, kinds, empty)
            out = capture.model(inputs, masked)  # full input, each modality alone, each removed
            reps = Representations(logits=out[0], modules={"views": out[1:len(kinds) + 1]})
            if learned:
                reps.modules["view_inputs"] = (inputs, masked)
            return reps

        return forward

    def collator(self, prep: Prepared):
        inputs = prep.extras["inputs"]["train"]
        live = prep.teacher is not None and prep.recipe.teacher.cache == "off"
        roles = {role: value for role, value in inputs.items() if role == "student" or live}
        return MultimodalCollator(roles, list(prep.data.splits["train"]["label"]))

    def num_outputs(self, prep: Prepared) -> int:
        return len(prep.data.label_names)

    def cache_plan(self, prep, train):
        return None, "the multimodal task computes its teacher's views itself when distillation starts"

    def teacher_signals(self, prep: Prepared, train):
        """All of the teacher's views of the training split, computed once (stored) or, ``cache: off``, live."""
        if not any(term.reads_teacher for term in prep.module.terms):
            return None
        if prep.recipe.teacher.cache == "off":
            views = _teacher_views_of_train(prep)
            population = modality_saliency(views["full"], views["removed"]).mean(0)
            prep.extras["population"] = population
            print("[kdkit] teacher runs live at every step: teacher.cache is off")
            return LiveViews(prep.teacher, prep.extras["kinds"], prep.extras["empty"]["teacher"], population)
        cached = CachedViews(load_file(self._views_entry(prep) / "views.safetensors"))
        prep.extras["population"] = cached.population
        return cached

    @staticmethod
    def _views_entry(prep: Prepared, *, rebuild: bool = False) -> Path:
        """The artifact-store folder of the teacher's views of the training split, computed when it is missing,
        damaged or ``rebuild``; named after the teacher's weights, the modalities, the training examples and the
        input sizes, so a stale entry is never read."""
        recipe = prep.recipe
        key = digest({"task": TASK, "teacher": fingerprint_model(prep.teacher), "kinds": prep.extras["kinds"],
                      "examples": digest(list(index_dataset(prep.data, "train")["key"])),
                      "max_length": recipe.data.max_length, "image_size": recipe.data.image_size})
        store = ArtifactStore()
        found = None if rebuild else store.get("signals", key)
        if found is None:
            print(f"[kdkit] caching the teacher's logits on the full input and on every modality view "
                  f"({len(prep.data.splits['train'])} examples) in {store.path('signals', key)}")
            found = store.put("signals", key,
                              lambda work: save_file(_teacher_views_of_train(prep), work / "views.safetensors"))
        return found

    def store_teacher_signals(self, prep: Prepared, *, rebuild: bool = False) -> dict:
        """``kdkit cache``: store the teacher's views of the training split (the entry ``distill`` reads)."""
        folder = self._views_entry(prep, rebuild=rebuild)
        size = (folder / "views.safetensors").stat().st_size
        examples = len(prep.data.splits["train"])
        return {"path": str(folder), "examples": examples, "bytes": size, "bytes_per_example": size / examples}

    # --- evaluation and export -------------------------------------------------------------------------------------
    def evaluate(self, prep: Prepared) -> dict:
        recipe, kinds = prep.recipe, prep.extras["kinds"]
        split = recipe.evaluation.split
        labels = list(prep.data.splits[split]["label"])
        inputs = prep.extras["inputs"][split]
        batch_size = recipe.training.eval_batch_size
        results: dict = {"task": TASK, "split": split, "dm_alpha": recipe.evaluation.dm_alpha}
        student = score_model(prep.student, inputs["student"], labels, kinds, prep.extras["empty"]["student"],
                              batch_size)
        results["student"] = self._entry(prep, prep.student, inputs["student"], student,
                                         f"{_describe(recipe.student, kinds)} student")
        if prep.teacher is not None:
            teacher = self._teacher_scores(prep, inputs["teacher"], labels, split)
            results["teacher"] = self._entry(prep, prep.teacher, inputs["teacher"], teacher,
                                             f"{_describe(recipe.teacher, kinds)} teacher (fine-tuned)")
            results["saliency"] = {m: round(v, 4) for m, v in zip(kinds, teacher["saliency"])}
            population = prep.extras.get("population")  # the training split's, which training weighted by
            if population is not None:
                results["saliency_train"] = {m: round(v, 4) for m, v in zip(kinds, population.tolist())}
            msd = next((t for t in prep.module.terms if t.name.startswith("msd")), None)
            if msd is not None:
                w = msd.weights(torch.tensor(teacher["saliency_rows"]),
                                population.cpu() if population is not None else None)
                results["msd_weights"] = {m: round(v, 4) for m, v in zip(kinds, w.mean(0).tolist())}
        out = recipe.resolved_output_dir()
        (out / PER_QUERY).write_text(json.dumps({"student": {"accuracy": dict(enumerate(student["correct"]))}})
                                     + "\n")
        return results

    def _teacher_scores(self, prep: Prepared, tensors: dict, labels: list[int], split: str) -> dict:
        """The teacher's scores on the split, computed once per (weights, examples, settings) and stored."""
        recipe = prep.recipe
        key = digest({"task": TASK, "teacher": fingerprint_model(prep.teacher), "split": split,
                      "examples": digest(list(index_dataset(prep.data, split)["key"])),
                      "max_length": recipe.data.max_length, "image_size": recipe.data.image_size})
        store = ArtifactStore()
        found = store.get_json("evaluations", key)
        if found is None:
            found = score_model(prep.teacher, tensors, labels, prep.extras["kinds"], prep.extras["empty"]["teacher"],
                                recipe.training.eval_batch_size, _device())
            store.put_json("evaluations", key, found)
        return found

    def _entry(self, prep: Prepared, model: nn.Module, tensors: dict, scores: dict, name: str) -> dict:
        cfg = prep.recipe.evaluation
        latency = {}
        collate = MultimodalCollator({"model": tensors}, [0] * len(next(iter(next(iter(tensors.values())).values()))))
        for size in cfg.latency_batch_sizes:
            batch = collate([{"index": i} for i in range(min(size, len(collate.labels)))])
            latency[str(size)] = measure_latency(model, {"inputs": batch["model"]}, repeats=cfg.latency_repeats)
        views = {f"{modality}_only_accuracy": value for modality, value in scores["view_accuracy"].items()}
        return {"name": name, "params": count_parameters(model), "n": len(scores["correct"]),
                "metrics": {**scores["metrics"], **views}, "latency": latency}

    def export(self, prep: Prepared, trainer: DistillationTrainer, folder: Path) -> Path:
        if trainer.args.should_save:
            save_model(prep.student, prep.tokenizer, folder, prep.recipe.student, prep.data, prep.extras["specs"],
                       {"recipe": prep.recipe.name})
        return folder


def _describe(cfg: EncodersConfig, kinds: dict[str, str]) -> str:
    parts = {"image": cfg.image if cfg.image != "small_cnn" else f"small CNN ({cfg.image_width})",
             "text": cfg.text + (f" layers {cfg.text_layers}" if cfg.text_layers is not None else ""),
             "tabular": f"tabular MLP ({cfg.tabular_dim})"}
    return " + ".join(dict.fromkeys(parts[kind] for kind in kinds.values()))


def score_model(model: nn.Module, tensors: dict, labels: list[int], kinds: dict[str, str], empty: dict,
                batch_size: int, device: str = "cpu") -> dict:
    """A model's scores on a split: ``metrics`` (accuracy, macro-F1, ECE), ``view_accuracy`` (each single-modality
    view), ``correct`` (1/0 per example), the mean ``saliency`` per modality and each example's
    (``saliency_rows``)."""
    from sklearn.metrics import f1_score

    views = all_views(model, tensors, labels, kinds, empty, batch_size, device)
    y = torch.tensor(labels)
    confidence, prediction = views["full"].softmax(-1).max(-1)
    correct = prediction == y
    saliency = modality_saliency(views["full"], views["removed"])
    return {"metrics": {"accuracy": correct.float().mean().item(),
                        "macro_f1": float(f1_score(labels, prediction.tolist(), average="macro")),
                        "ece": calibration_error(confidence, correct)},
            "view_accuracy": {m: (views["only"][i].argmax(-1) == y).float().mean().item()
                              for i, m in enumerate(kinds)},
            "correct": correct.int().tolist(), "saliency": saliency.mean(0).tolist(),
            "saliency_rows": saliency.tolist()}
