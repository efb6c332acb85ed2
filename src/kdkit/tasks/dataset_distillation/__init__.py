"""Soft-label dataset distillation (Sucholutsky & Schonlau 2021) for images: a task with its own loop."""

from kdkit.tasks.dataset_distillation.task import DatasetDistillationTask, load_distilled, train_on_distilled

__all__ = ["DatasetDistillationTask", "load_distilled", "train_on_distilled"]
