"""Student architectures that transformers does not ship (registered with the Auto classes on import of kdkit)."""

from kdkit.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, register

register()

__all__ = ["BiLSTMConfig", "BiLSTMForSequenceClassification"]
