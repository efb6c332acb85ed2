"""Tasks: how each kind of data is loaded, tokenised and batched."""

from kdkit.tasks.classification import (ClassificationData, DataCollator, load_classification_data,
                                        load_named_dataset, tokenize)

__all__ = ["ClassificationData", "DataCollator", "load_classification_data", "load_named_dataset", "tokenize"]
