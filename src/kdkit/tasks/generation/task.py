"""Generation: prompt → completion distillation of causal language models (token-level KD, on-policy GKD).

- **Models**: ``AutoModelForCausalLM`` teacher and student sharing one vocabulary (token-level losses compare
  next-token distributions position by position), or two encoder-decoders (``AutoModelForSeq2SeqLM``, chosen by the
  config's ``is_encoder_decoder``: the prompt is the encoder's input). Students from the shared builders: the
  teacher with a subset of its blocks (``teacher_layers``), a smaller config, or a pretrained model with the same
  tokenizer.
- **Noisy self-distillation** (``generation.noise``, :mod:`kdkit.tasks.generation.noise`): teacher dropout at
  inference and seeded noise on the student's source.
- **Data**: :mod:`kdkit.tasks.generation.data` (jsonl prompt/completion or chat, ``bbc_summaries``); tokenised and
  laid out by :mod:`kdkit.tasks.generation.batches` (prompts cut to ``data.max_prompt_length`` keeping their last
  ``data.prompt_tail`` tokens, completions to ``data.max_completion_length`` with EOS). Losses read only the
  completion positions (``labels``), teacher forcing.
- **Losses**: :mod:`kdkit.terms.token` (``nll``, ``token_kd`` with forward/reverse KL, JSD β, TVD at T).
- **Teacher signals**: cached once as the teacher's top-k log-probabilities and tail mass at the completion
  positions only (``teacher.cache_top_k``, default 32: 130 bytes per completion token in fp16), or live. On-policy
  batches (``generation.on_policy`` = λ > 0, GKD) are the student's samples, which no cache can hold: the teacher
  then runs live. ``generation.sequence_kd`` trains on the teacher's greedy completions of the training prompts
  instead of the references (sequence-level KD, Kim & Rush 2016), generated once and stored.
- **Evaluation** (:mod:`kdkit.tasks.generation.evaluation`): greedy generation, ROUGE-1/2/L (``rouge-score``),
  perplexity of the reference completions, generation latency and tokens/s, sample outputs side by side.
- **Export**: a plain HF folder (weights, tokenizer, generation config) that ``AutoModelForCausalLM`` and
  ``pipeline("text-generation")`` load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from datasets import Dataset, DatasetDict
from pydantic import Field, model_validator
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, set_seed

from kdkit import __version__
from kdkit.capture import Representations
from kdkit.config import Recipe
from kdkit.engine.pipeline import TrainerTask, stored_teacher
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import ConfigError
from kdkit.loading import load_model, load_tokenizer, model_config
from kdkit.schema import TOKENS_MAX, Count, Seed, Strict, Temperature
from kdkit.signals import CachedTeacher, LiveTeacher
from kdkit.store import digest
from kdkit.students import StudentContext, build_student
from kdkit.tasks import register
from kdkit.tasks.generation.batches import (Encoder, GenerationCollator, OnPolicy, decoder_start_of, model_inputs,
                                            pad_token_id)
from kdkit.tasks.generation.data import Example, GenerationData, load_generation_data
from kdkit.tasks.generation.noise import Neighbours, SourceNoise, TeacherDropout
from kdkit.terms import build_terms
from kdkit.terms.token import NLLLoss
from kdkit.vocab import same_vocabulary


class GenerationDataConfig(Strict):
    """Where the examples come from (a named set such as ``bbc_summaries``, or jsonl files) and the token budget:
    prompts of at most ``max_prompt_length`` tokens (a longer one keeps its head and its last ``prompt_tail``
    tokens), completions of at most ``max_completion_length`` tokens including EOS; ``max_train_samples`` and
    ``max_eval_samples`` keep that many examples (seeded) of the training and the evaluated split."""

    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    max_prompt_length: int = Field(256, ge=2, le=TOKENS_MAX)
    prompt_tail: int = Field(8, ge=0, le=TOKENS_MAX)
    max_completion_length: int = Field(32, ge=2, le=TOKENS_MAX)
    max_train_samples: Count | None = None
    max_eval_samples: Count | None = None
    seed: Seed = 0

    @model_validator(mode="after")
    def _consistent(self) -> "GenerationDataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (a named set) or data.train_file")
        if self.prompt_tail >= self.max_prompt_length:
            raise ValueError(f"prompt_tail {self.prompt_tail} must be below max_prompt_length "
                             f"{self.max_prompt_length} (the head of a long prompt keeps the rest)")
        return self


class NoiseConfig(Strict):
    """Noisy self-distillation's noise (Liu, Shen & Lapata 2021; :mod:`kdkit.tasks.generation.noise`): teacher
    dropout at inference, and on the student's source: word drop, local shuffle within ``shuffle_window`` words,
    sentence shuffle and drop (probabilities), replacement by embedding-space neighbours (probability per token)."""

    teacher_dropout: float = Field(0.15, ge=0, lt=1)
    word_drop: float = Field(0.1, ge=0, lt=1)
    shuffle_window: int = Field(3, ge=0, le=100)
    sentence_shuffle: float = Field(0.0, ge=0, le=1)
    sentence_drop: float = Field(0.0, ge=0, lt=1)
    neighbour_replace: float = Field(0.0, ge=0, le=1)


class GenerationConfig(Strict):
    """Decoding and on-policy settings: ``max_new_tokens`` generated in evaluation (greedy) and in on-policy
    samples; ``on_policy`` λ, the probability that a training batch's completions are sampled from the student at
    ``sample_temperature`` (GKD); ``sequence_kd`` trains on the teacher's greedy completions; ``samples``
    examples shown side by side in the report; ``speed_repeats`` timed generations per batch size; ``noise``
    makes the run noisy self-distillation (:class:`NoiseConfig`); ``score`` what evaluation ranks on: ``rouge`` of
    greedy completions, or ``likelihood`` (token accuracy and perplexity of the references, nothing generated but the
    speed measurement; for language-modelling text such as ``bbc_text``)."""

    max_new_tokens: int = Field(32, ge=1, le=TOKENS_MAX)
    on_policy: float = Field(0.0, ge=0, le=1)
    sample_temperature: Temperature = 1.0
    sequence_kd: bool = False
    samples: int = Field(5, ge=0, le=100)
    speed_repeats: int = Field(3, ge=1, le=1000)
    noise: NoiseConfig | None = None
    score: Literal["rouge", "likelihood"] = "rouge"


class GenerationRecipe(Recipe):
    task: str = "generation"
    data: GenerationDataConfig
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    @model_validator(mode="after")
    def _teacher_for_generation(self) -> "GenerationRecipe":
        reads_teacher = any(term.name == "token_kd" for term in self.losses)
        if self.generation.on_policy > 0 and not reads_teacher:
            raise ConfigError("recipe key 'generation.on_policy': on-policy batches are the student's samples, "
                              "which only a teacher can grade; add a token_kd loss or set on_policy: 0")
        if self.generation.noise is not None and self.generation.on_policy > 0:
            raise ConfigError("recipe key 'generation.noise': source noise perturbs the training prompts, on-policy "
                              "batches are the student's own samples; use one of them (on_policy: 0 or no noise)")
        if self.generation.sequence_kd and self.teacher is None:
            raise ConfigError("recipe key 'generation.sequence_kd': the completions to learn are the teacher's; "
                              "give teacher.model")
        return self


def subsample(examples: list[Example], count: int | None, seed: int) -> list[Example]:
    """At most ``count`` of ``examples`` (a seeded choice, kept in their order)."""
    if not count or len(examples) <= count:
        return examples
    keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[:count])
    return [examples[i] for i in keep]


def load_data(cfg: GenerationDataConfig) -> GenerationData:
    data = load_generation_data(cfg.dataset, train_file=cfg.train_file, validation_file=cfg.validation_file,
                                test_file=cfg.test_file, seed=cfg.seed)
    splits = dict(data.splits)
    splits["train"] = subsample(splits["train"], cfg.max_train_samples, cfg.seed)
    for name in ("validation", "test"):
        splits[name] = subsample(splits[name], cfg.max_eval_samples, cfg.seed)
    return GenerationData(splits)


def auto_class_of(config) -> type:
    """``AutoModelForSeq2SeqLM`` for an encoder-decoder config, else ``AutoModelForCausalLM``."""
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def load_causal_lm(name: str, key: str):
    """A language model by name, folder or hub id: causal, or an encoder-decoder as its config says."""
    return load_model(name, auto_class_of(model_config(name, key)[1]), key)


def encoder(recipe: GenerationRecipe, tokenizer, model) -> Encoder:
    cfg = recipe.data
    return Encoder(tokenizer, cfg.max_prompt_length, cfg.prompt_tail, cfg.max_completion_length,
                   seq2seq=model.config.is_encoder_decoder)


def forward(capture, batch: dict) -> Representations:
    """The causal LM on a batch, logits at the K labelled positions only."""
    return capture(**model_inputs(batch))


def teacher_forward(capture, batch: dict) -> Representations:
    """The teacher on a batch: the clean prompts (``teacher_*``) where the student's are noisy."""
    return capture(**model_inputs(batch, "teacher_" if "teacher_input_ids" in batch else ""))


@register
class GenerationTask(TrainerTask):
    """Prompt → completion generation with causal LMs (token-level KD, on-policy GKD, sequence-level KD)."""

    name = "generation"
    recipe = GenerationRecipe
    primary_metric = "rougeL"
    pipeline_tag = "text-generation"

    def load_data(self, recipe):
        return load_data(recipe.data)

    supervised_loss = "nll"

    def training_texts(self, recipe, data):
        return [example.prompt + example.completion for example in data["train"]]

    def load_teacher(self, recipe, data, path):
        return load_causal_lm(path, "teacher.model")

    def build_student(self, recipe, data, teacher, teacher_tokenizer):
        config = teacher.config if teacher is not None else model_config(recipe.student.model, "student.model")[1]
        ctx = StudentContext(teacher=teacher, teacher_tokenizer=teacher_tokenizer, auto_class=auto_class_of(config),
                             load_pretrained=load_causal_lm, load_config=model_config, load_tokenizer=load_tokenizer)
        student, tokenizer = build_student(recipe.student, ctx)
        if teacher is not None and student.config.is_encoder_decoder != teacher.config.is_encoder_decoder:
            kinds = {True: "an encoder-decoder", False: "a causal LM"}
            raise ConfigError(f"the student is {kinds[student.config.is_encoder_decoder]} but the teacher "
                              f"{kinds[teacher.config.is_encoder_decoder]}; token-level distillation lines up their "
                              f"completion positions, so give two of one kind")
        if teacher is not None and not same_vocabulary(tokenizer, teacher_tokenizer):
            raise ConfigError("the student's tokenizer differs from the teacher's; token-level distillation compares "
                              "next-token distributions over one vocabulary, so give a student with the teacher's "
                              "tokenizer (student.init teacher_layers or config)")
        return student, tokenizer

    def forward(self, capture, batch):
        return forward(capture, batch)

    def teacher_forward(self, capture, batch):
        return teacher_forward(capture, batch)

    def num_outputs(self, prep):
        return prep.student.get_output_embeddings().weight.shape[0]

    # --- data ------------------------------------------------------------------------------------------------------
    def tokenize(self, prep):
        train = prep.data["train"]
        if prep.recipe.generation.sequence_kd:
            from kdkit.tasks.generation.evaluation import teacher_completions

            train = teacher_completions(self, prep, train)
        columns = encoder(prep.recipe, prep.tokenizer, prep.student).rows(train)
        if prep.recipe.generation.noise is not None:  # the hook rebuilds each row's prompt from its example
            columns["index"] = list(range(len(train)))
            prep.extras["train_examples"] = train
        return DatasetDict({"train": Dataset.from_dict(columns)})

    def collator(self, prep):
        return GenerationCollator(pad_token_id(prep.tokenizer), decoder_start_of(prep.student))

    # --- the teacher -----------------------------------------------------------------------------------------------
    def cache_plan(self, prep, train):
        cfg = prep.recipe.generation
        if cfg.on_policy > 0:
            return None, "generation.on_policy samples completions from the student, which the teacher scores live", \
                None, None
        if cfg.noise is not None and cfg.noise.teacher_dropout > 0:
            return None, ("generation.noise.teacher_dropout: the teacher's dropout differs at every step, so its "
                          "signals cannot be cached"), None, None
        if prep.student.config.is_encoder_decoder:  # the cache keys an encoder-decoder's rows by their prompt
            completions: dict[tuple, list] = {}
            for prompt, completion in zip(train["prompt"], train["completion"]):
                if completions.setdefault(tuple(prompt), completion) != completion:
                    return None, ("one prompt has two different completions, which a cache keyed by the "
                                  "encoder-decoder's prompt cannot tell apart"), None, None
        return super().cache_plan(prep, train)

    def signal_source(self, prep, cache):
        if cache is not None:
            return CachedTeacher(cache, expand_topk=False)
        noise = prep.recipe.generation.noise
        forward = self.teacher_forward
        if noise is not None and noise.teacher_dropout > 0:
            forward = TeacherDropout(noise.teacher_dropout, forward)
        return LiveTeacher(prep.teacher, forward, **prep.module.teacher_needs().capture_kwargs())

    def batch_hook(self, prep):
        cfg = prep.recipe.generation
        tokenizer = prep.tokenizer
        if cfg.noise is not None:
            neighbours = None
            if cfg.noise.neighbour_replace > 0:
                neighbours = Neighbours(prep.student.get_input_embeddings().weight)
            return SourceNoise(cfg.noise, prep.extras["train_examples"], encoder(prep.recipe, tokenizer, prep.student),
                               pad_token_id(tokenizer), prep.recipe.training.seed, neighbours,
                               decoder_start_of(prep.student))
        if cfg.on_policy == 0:
            return None
        return OnPolicy(cfg.on_policy, prep.recipe.training.seed, min(cfg.max_new_tokens,
                                                                      prep.recipe.data.max_completion_length),
                        cfg.sample_temperature, pad_token_id(tokenizer), tokenizer.eos_token_id,
                        decoder_start_of(prep.student))

    def finetune_teacher(self, recipe, data) -> str:
        """Fine-tune the teacher on the training split's reference completions (NLL), once; the stored folder.

        The teacher learns from the whole training split (``data.max_train_samples`` limits the student only);
        the key covers the teacher, the data settings, the fine-tuning settings and kdkit's version."""
        cfg = recipe.teacher
        full = recipe.data.model_copy(update={"max_train_samples": None})
        data = load_data(full) if recipe.data.max_train_samples else data
        key = digest({"model": cfg.model, "data": full.model_dump(), "finetune": cfg.finetune.model_dump(),
                      "kdkit": __version__, "task": self.name})

        def build(work: Path) -> None:
            set_seed(cfg.finetune.seed)
            model, tokenizer = load_causal_lm(cfg.model, "teacher.model")
            module = DistillationModule(model, build_terms([NLLLoss(name="nll")], None, model), forward=forward)
            args = training_arguments(cfg.finetune, work / "checkpoints", save_strategy="no")
            train = Dataset.from_dict(encoder(recipe, tokenizer, model).rows(data["train"]))
            trainer = DistillationTrainer(module, args, train_dataset=train, data_collator=GenerationCollator(
                pad_token_id(tokenizer), decoder_start_of(model)))
            trainer.train()
            set_generation_defaults(model, tokenizer, recipe.generation.max_new_tokens)
            trainer.export_student(work, tokenizer)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)

        return stored_teacher(f"{cfg.model}-{recipe.data.dataset or 'files'}", key, build,
                              f"fine-tuning the teacher '{cfg.model}' on the reference completions",
                              meta={"source": cfg.model, "key": key})

    # --- evaluation and export -------------------------------------------------------------------------------------
    def evaluate(self, prep):
        from kdkit.tasks.generation import evaluation

        return evaluation.evaluate_run(prep, out=prep.recipe.resolved_output_dir())

    def evaluate_saved(self, prep, out):
        from kdkit.tasks.generation import evaluation

        return evaluation.evaluate_run(prep, out=out)

    def evaluate_student(self, prep, model, name):
        from kdkit.tasks.generation import evaluation

        return evaluation.student_entry(prep, model, name)[0]

    def export(self, prep, trainer, folder):
        set_generation_defaults(prep.student, prep.tokenizer, prep.recipe.generation.max_new_tokens)
        return trainer.export_student(folder, prep.tokenizer)


def set_generation_defaults(model, tokenizer, max_new_tokens: int) -> None:
    """Greedy decoding of ``max_new_tokens`` that stops at EOS, as the report measured, in the model's generation
    config (saved with it, so ``pipeline("text-generation")`` decodes the same way)."""
    config = model.generation_config
    config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
    config.max_new_tokens, config.eos_token_id = max_new_tokens, tokenizer.eos_token_id
    config.pad_token_id = pad_token_id(tokenizer)
