"""The multimodal task (modality-specific distillation, MSD; issue 19): its data layer (:mod:`.data`), encoders,
inputs and masking rules (:mod:`.encoders`) and the task (:mod:`.task`)."""

from kdkit.tasks.multimodal.task import MultimodalTask, load_saved_model

__all__ = ["MultimodalTask", "load_saved_model"]
