"""Training engine: the distillation trainer on ``transformers.Trainer`` and the recipe's loss terms."""

from kdkit.engine.terms import Needs, Term, build_terms
from kdkit.engine.trainer import DistillationArguments, DistillationModule, DistillationTrainer, training_arguments

__all__ = ["DistillationArguments", "DistillationModule", "DistillationTrainer", "Needs", "Term", "build_terms",
           "training_arguments"]
