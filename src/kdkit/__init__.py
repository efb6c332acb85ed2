"""kdkit: knowledge distillation for language models."""

__version__ = "0.1.0"

# registers the students transformers does not ship (model type kdkit-bilstm) with the Auto classes, so an
# exported student folder loads with AutoModelForSequenceClassification.from_pretrained after `import kdkit`
from kdkit import models  # noqa: E402,F401
