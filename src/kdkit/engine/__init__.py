"""Training engine: the distillation trainer on ``transformers.Trainer`` and the task-agnostic pipeline."""

from kdkit.engine.trainer import DistillationArguments, DistillationModule, DistillationTrainer, training_arguments

__all__ = ["DistillationArguments", "DistillationModule", "DistillationTrainer", "training_arguments"]
