"""The generation task: prompt → completion distillation of causal language models (see :mod:`.task`)."""

from kdkit.tasks.generation.task import GenerationDataConfig, GenerationRecipe, GenerationTask

__all__ = ["GenerationDataConfig", "GenerationRecipe", "GenerationTask"]
