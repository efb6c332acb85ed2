"""The multimodal task (modality-specific distillation, MSD; issue 19): so far its data layer, :mod:`.data`."""
