"""The teacher as a signal source: what the training engine asks of a teacher, whatever computes it."""

from kdkit.signals.live import LiveTeacher

__all__ = ["LiveTeacher"]
