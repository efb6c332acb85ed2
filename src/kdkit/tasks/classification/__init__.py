"""Text classification: data (:mod:`.data`) and the task (:mod:`.task`)."""

from kdkit.tasks.classification.data import (SPLITS, ClassificationData, DataCollator, load_classification_data,
                                             load_named_dataset, preview, tokenize)
from kdkit.tasks.classification.task import (ClassificationDataConfig, ClassificationRecipe, ClassificationTask,
                                             DataConfig, evaluate, evaluate_pair, load_classifier, load_data)

__all__ = ["SPLITS", "ClassificationData", "ClassificationDataConfig", "ClassificationRecipe", "ClassificationTask",
           "DataCollator", "DataConfig", "evaluate", "evaluate_pair", "load_classification_data", "load_classifier",
           "load_data", "load_named_dataset", "preview", "tokenize"]
