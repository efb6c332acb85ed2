"""The teacher as a signal source: what the training engine asks of a teacher, whatever computes it."""

from kdkit.signals.cache import (
    CachedTeacher,
    SignalSpec,
    TeacherCache,
    build_cache,
    example_key,
    fingerprint_model,
    fingerprint_tokenizer,
)
from kdkit.signals.live import LiveTeacher

__all__ = [
    "CachedTeacher",
    "LiveTeacher",
    "SignalSpec",
    "TeacherCache",
    "build_cache",
    "example_key",
    "fingerprint_model",
    "fingerprint_tokenizer",
]
