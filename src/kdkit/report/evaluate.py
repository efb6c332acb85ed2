"""Size, accuracy (with its calibration) and latency of a classifier: the numbers a distillation report compares."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdkit.errors import ConfigError, DataError
from kdkit.progress import progress as progress_bar
from kdkit.report.calibration import calibration_error


def count_parameters(model: nn.Module) -> int:
    """Number of parameters; a tensor shared by several modules (tied embeddings) counts once."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[torch.device]:
    """eval mode (no dropout) and inference mode for the block, then the model's previous mode back."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # labels would make HF models compute a loss; teacher_* columns belong to the teacher's tokenizer
    return {k: _to(v, device) for k, v in batch.items() if k != "labels" and not k.startswith("teacher_")}


def _to(value, device: torch.device):
    """A tensor, or nested dicts of tensors (a multimodal model's inputs), on ``device``."""
    return {k: _to(v, device) for k, v in value.items()} if isinstance(value, dict) else value.to(device)


def evaluate_classifier(model: nn.Module, dataset, collator: Callable, batch_size: int = 64,
                        progress: bool = True) -> dict:
    """Accuracy of argmax(logits) against ``labels`` over a tokenised dataset, and its calibration.

    ``dataset`` yields examples that ``collator`` turns into a batch with ``input_ids`` (B, L),
    ``attention_mask`` (B, L) and ``labels`` (B,); the model returns logits (B, C) as a tensor or ``.logits``.
    Returns ``{"accuracy": fraction in [0, 1], "ece": expected calibration error (15 equal-width bins, see
    :mod:`kdkit.report.calibration`), "n": number of examples, "correct": 1/0 per example, in dataset order,
    "top_share": the share of the examples given the most often predicted class (1.0: a collapsed model)}``.
    """
    if len(dataset) == 0:
        raise DataError("evaluate_classifier: the dataset to evaluate on has no examples")
    confidences, correct, predictions = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    with _inference(model) as device:
        for batch in progress_bar(loader, desc="evaluating", disable=not progress):
            output = model(**_model_inputs(batch, device))
            logits = output.logits if hasattr(output, "logits") else output
            confidence, prediction = logits.float().softmax(-1).max(-1)
            confidences.append(confidence.cpu())
            correct.append(prediction.cpu() == batch["labels"])
            predictions.append(prediction.cpu())
    confidences, correct = torch.cat(confidences), torch.cat(correct)
    top = torch.cat(predictions).bincount().max().item()
    return {"accuracy": correct.sum().item() / len(correct), "ece": calibration_error(confidences, correct),
            "n": len(correct), "correct": correct.int().tolist(), "top_share": top / len(correct)}


def measure_latency(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 20, warmup: int = 3) -> dict:
    """Wall-clock seconds of one forward pass on ``batch``: median and 90th percentile over ``repeats`` timed
    runs after ``warmup`` untimed ones (first calls pay for allocation and kernel selection).

    Timed with ``time.perf_counter``; on CUDA the device is synchronised around each run.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"measure_latency: repeats {repeats} must be >= 1 and warmup {warmup} >= 0")
    times = []
    with _inference(model) as device:
        inputs = _model_inputs(batch, device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(**inputs)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median, p90 = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.5, 0.9], dtype=torch.float64))
    return {"median_s": median.item(), "p90_s": p90.item()}
