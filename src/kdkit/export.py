"""ONNX export of a saved student — a classifier or a causal LM, its embedding compressed or not — checked by
onnxruntime against PyTorch (logits at every real token of a padded batch) and timed beside it.

The graph takes ``input_ids`` and ``attention_mask`` (batch and sequence axes dynamic) and returns ``logits``; a
causal LM is exported without a KV cache (one forward over the whole sequence). The folder written holds
``model.onnx``, the tokenizer files and ``onnx_report.json``; it is built in a temporary folder beside the target and
renamed into place, so an interrupted or failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from kdkit.errors import ConfigError, KdkitError, ModelError
from kdkit.loading import load_model, model_config

PARITY_TOLERANCE = 1e-3  # of the largest |logit|: float32 graphs differ from eager PyTorch by rounding only


class _Logits(nn.Module):
    def __init__(self, model: nn.Module, causal: bool):
        super().__init__()
        self.model, self.causal = model, causal

    def forward(self, input_ids, attention_mask):
        extra = {"use_cache": False} if self.causal else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def _auto_class(config):
    import transformers

    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError("ONNX export covers classifiers and causal LMs; an encoder-decoder needs separate encoder "
                          "and decoder graphs, which kdkit does not write")
    architecture = (getattr(config, "architectures", None) or [""])[0]
    if architecture.endswith("ForCausalLM"):
        return transformers.AutoModelForCausalLM, True
    if architecture.endswith("ForSequenceClassification"):
        return transformers.AutoModelForSequenceClassification, False
    raise ConfigError(f"the model's architecture {architecture or '(none)'!r} is neither a sequence classifier nor "
                      f"a causal LM; ONNX export covers those two")


def _batch(vocab_size: int, batch: int, length: int, seed: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(3, vocab_size - 1), vocab_size, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if padded and batch > 1:
        mask[0, : length // 3] = 0  # a left-padded row, as batched generation lays them out
    return ids, mask


def _median_ms(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def export_onnx(model: str, output_dir: str | Path, *, length: int = 64, batch_sizes: tuple[int, ...] = (1, 8),
                repeats: int = 10, overwrite: bool = False) -> dict:
    """Export ``model`` (a folder, named model or hub id) to ``output_dir``/model.onnx; the report (parity and
    latency, also written as onnx_report.json)."""
    try:
        import onnxruntime
    except ImportError:
        raise KdkitError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'kdkit[onnx]'") from None
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"--output-dir {out}: exists and is not empty; give another folder or --overwrite")
    path, config = model_config(model, "MODEL")
    auto_class, causal = _auto_class(config)
    network, tokenizer = load_model(model, auto_class, "MODEL")
    wrapped = _Logits(network.eval(), causal)
    vocab_size = network.get_input_embeddings().num_embeddings
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        example = _batch(vocab_size, 2, 8, seed=0, padded=True)
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
        with torch.no_grad():
            torch.onnx.export(wrapped, example, str(staging / "model.onnx"), input_names=["input_ids",
                              "attention_mask"], output_names=["logits"], dynamo=True, verbose=False,
                              dynamic_shapes={"input_ids": dims, "attention_mask": dims})
        session = onnxruntime.InferenceSession(str(staging / "model.onnx"), providers=["CPUExecutionProvider"])

        def run_onnx(ids, mask):
            return torch.from_numpy(session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0])

        ids, mask = _batch(vocab_size, 3, max(4, min(length, 24)), seed=1, padded=True)
        with torch.no_grad():
            expected = wrapped(ids, mask)
        got = run_onnx(ids, mask)
        real = mask.bool() if causal else torch.ones(len(ids), dtype=torch.bool)  # padded positions mean nothing
        difference = float((got[real] - expected[real]).abs().max())
        scale = float(expected[real].abs().max())
        if not difference <= PARITY_TOLERANCE * max(scale, 1.0):
            raise ModelError(f"the ONNX graph's logits differ from PyTorch's by {difference:.3g} (largest logit "
                             f"{scale:.3g}); nothing was written")
        latency = {}
        for batch in batch_sizes:
            ids, mask = _batch(vocab_size, batch, length, seed=2, padded=False)
            with torch.no_grad():
                torch_ms = _median_ms(lambda: wrapped(ids, mask), repeats)
            onnx_ms = _median_ms(lambda: run_onnx(ids, mask), repeats)
            latency[str(batch)] = {"pytorch_ms": torch_ms, "onnxruntime_ms": onnx_ms, "speedup": torch_ms / onnx_ms}
        tokenizer.save_pretrained(staging)
        report = {"model": str(model), "kind": "causal LM" if causal else "sequence classifier",
                  "architecture": config.architectures[0], "compressed_embedding": bool(
                      getattr(config, "block_embedding", None)),
                  "parity_max_abs_difference": difference, "largest_logit": scale, "sequence_length": length,
                  "latency_ms": latency, "repeats": repeats, "torch_threads": torch.get_num_threads(),
                  "onnxruntime": onnxruntime.__version__, "onnx_bytes": (staging / "model.onnx").stat().st_size +
                  sum(f.stat().st_size for f in staging.glob("model.onnx.data"))}
        (staging / "onnx_report.json").write_text(json.dumps(report, indent=1))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return report
