"""The multimodal task (modality-specific distillation, MSD; issue 19): so far its data layer (:mod:`.data`) and
its encoders, inputs and masking rules (:mod:`.encoders`); the training task is not built yet."""
