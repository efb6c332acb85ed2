"""What a forward pass exposes: logits, hidden states, attention maps and the outputs of named submodules.

Intermediate tensors of arbitrary modules are collected by forward hooks keyed by module path (as in
torchdistill), registered for one call and always removed, so user models are never edited. Hugging Face
models additionally give hidden states and attention probabilities through their own output flags.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from kdkit.errors import ConfigError, ModelError

_QKV_NAMES = (
    ("query", "key", "value"),  # BERT, RoBERTa
    ("q", "k", "v"),  # MPNet
    ("q_proj", "k_proj", "v_proj"),  # Llama and most decoders
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
)


@dataclass
class Representations:
    """Tensors captured from one forward pass.

    logits: (B, C) or (B, L, V), or None when the model has no logits.
    hidden_states: n_layers + 1 tensors (B, L, D); index 0 is the embedding output, l the output of block l.
    attentions: n_layers tensors (B, H, L, L) of attention probabilities (after softmax).
    attention_mask: (B, L), 1 = real token, 0 = padding; None when the inputs had none.
    modules: output of each hooked submodule by qualified name (first tensor of a tuple output; the last
        call's output when a module runs several times in one forward).
    """

    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    attention_mask: Tensor | None = None
    modules: dict[str, Any] = field(default_factory=dict)

    def pooled(self, layer: int, how: str = "cls") -> Tensor:
        """Pool hidden_states[layer] (B, L, D) to (B, D).

        "cls": the vector at position 0. "mean": mean over real tokens, sum_l m_l h_l / sum_l m_l with the
        attention mask m (all tokens when there is no mask; a row without real tokens gives 0).
        A teacher cache stores pooled vectors under ``modules["pooled.<layer>"]`` (pooled as its spec says); they
        are returned as they are.
        """
        if f"pooled.{layer}" in self.modules:
            return self.modules[f"pooled.{layer}"]
        if self.hidden_states is None:
            raise ConfigError("pooled() needs hidden states; create the Capture with hidden_states=True")
        n = len(self.hidden_states)
        if not -n <= layer < n:
            raise ConfigError(f"pooled layer {layer} is outside 0..{n - 1} (0 = embedding output)")
        hidden = self.hidden_states[layer]
        if how == "cls":
            return hidden[:, 0]
        if how == "mean":
            if self.attention_mask is None:
                return hidden.mean(dim=1)
            mask = self.attention_mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        raise ConfigError(f"pooled how={how!r} is not supported; valid: 'cls', 'mean'")


class Capture:
    """Runs a model and returns a :class:`Representations` with what was asked for.

    hidden_states / attentions need a transformers ``PreTrainedModel``; attentions also need eager attention
    (sdpa and flash kernels never materialise the probabilities). ``modules`` names submodules (as in
    ``model.named_modules()``) whose outputs are recorded by forward hooks for the duration of each call.
    Gradients flow as usual: wrap the call in ``torch.no_grad()`` yourself for a frozen teacher.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        hidden_states: bool = False,
        attentions: bool = False,
        modules: Sequence[str] = (),
    ):
        is_hf = isinstance(model, PreTrainedModel)
        if (hidden_states or attentions) and not is_hf:
            raise ModelError(
                f"hidden_states/attentions need a transformers PreTrainedModel, got {type(model).__name__}; "
                "capture its submodules with modules=[...] instead"
            )
        if attentions and model.config._attn_implementation != "eager":
            raise ModelError(
                f"attentions=True needs eager attention, but the model uses "
                f"{model.config._attn_implementation!r}; load it with attn_implementation=\"eager\""
            )
        available = dict(model.named_modules())
        for name in modules:
            if name not in available:
                hints = difflib.get_close_matches(name, available, n=3) or list(available)[1:4]
                raise ModelError(f"module {name!r} not found in {type(model).__name__}; e.g. {hints}")
        self.model = model
        self.is_hf = is_hf
        self.hidden_states = hidden_states
        self.attentions = attentions
        self.modules = {name: available[name] for name in modules}

    def __call__(self, **inputs: Any) -> Representations:
        captured: dict[str, Any] = {}
        handles = [module.register_forward_hook(_recorder(captured, name)) for name, module in self.modules.items()]
        try:
            output = self._forward(inputs)
        finally:
            for handle in handles:
                handle.remove()
        reps = Representations(
            logits=_logits_of(output), attention_mask=inputs.get("attention_mask"), modules=captured
        )
        if self.hidden_states:
            reps.hidden_states = _required(output, "hidden_states", self.model)
        if self.attentions:
            reps.attentions = _required(output, "attentions", self.model)
        return reps

    def _forward(self, inputs: dict[str, Any]) -> Any:
        if self.is_hf:
            return self.model(
                **inputs,
                output_hidden_states=self.hidden_states,
                output_attentions=self.attentions,
                return_dict=True,
            )
        params = inspect.signature(self.model.forward).parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if takes_kwargs or set(inputs) <= set(params):
            return self.model(**inputs)
        if "input_ids" not in inputs:
            raise ModelError(
                f"{type(self.model).__name__}.forward takes {list(params)}, not the inputs {sorted(inputs)}"
            )
        return self.model(inputs["input_ids"])


def _recorder(store: dict[str, Any], name: str):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = next((item for item in output if isinstance(item, Tensor)), output)
        store[name] = output

    return hook


def _logits_of(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):  # also transformers' ModelOutput
        return output.get("logits")
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def _required(output: Any, key: str, model: nn.Module) -> tuple[Tensor, ...]:
    value = getattr(output, key, None)
    if not value:  # sdpa/flash kernels return an empty tuple for attentions instead of failing
        raise ModelError(f"{type(model).__name__} returned no {key}; it does not support output_{key}=True")
    return tuple(value)


def find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The transformer block list of ``model``: (parent module, attribute name, the nn.ModuleList).

    It is the first nn.ModuleList whose length equals config.num_hidden_layers (bert.encoder.layer,
    distilbert.transformer.layer, model.layers, ...).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        raise ModelError(f"{type(model).__name__} has no transformers config, so its blocks cannot be found")
    depth = config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            parent, _, attribute = name.rpartition(".")
            return model.get_submodule(parent), attribute, module
    raise ModelError(f"no nn.ModuleList of num_hidden_layers={depth} blocks in {type(model).__name__}")


def attention_modules(model: nn.Module) -> list[dict[str, str]]:
    """Qualified names of the Q/K/V linear layers of each transformer block, in block order.

    Returns one {"query", "key", "value"} dict per block, found by the common names (query/key/value,
    q/k/v, q_proj/k_proj/v_proj, q_lin/k_lin/v_lin). The first match in a block is taken, which is the
    self-attention in HF blocks that also have cross-attention.
    """
    _, _, blocks = find_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is blocks)
    found = []
    for index, block in enumerate(blocks):
        names = dict(block.named_modules())
        for q, k, v in _QKV_NAMES:
            match = next((p for p in names if p.rsplit(".", 1)[-1] == q and _sibling(p, k) in names), None)
            if match is not None:
                base = f"{prefix}.{index}.{match}"
                found.append({"query": base, "key": _sibling(base, k), "value": _sibling(base, v)})
                break
        else:
            raise ModelError(
                f"no Q/K/V linear layers in block {index} of {type(model).__name__}; known names: "
                + ", ".join("/".join(names_) for names_ in _QKV_NAMES)
            )
    return found


def _sibling(path: str, name: str) -> str:
    return f"{path.rsplit('.', 1)[0]}.{name}" if "." in path else name


def attention_scores(query_out: Tensor, key_out: Tensor, num_heads: int) -> Tensor:
    """Pre-softmax attention scores S = Q K^T / sqrt(d_head) per head (TinyBERT's attention target).

    query_out (B, L, H*d_head), key_out (B, L, H_kv*d_head) are the outputs of the Q and K linear layers
    (see :func:`attention_modules`); with fewer key heads (grouped-query attention) each key head serves
    H/H_kv query heads. Returns (B, H, L, L) without the padding mask. Position terms applied inside the
    attention (MPNet's relative bias, Llama's rotary embedding) are not included.
    """
    batch, length, width = query_out.shape
    if width % num_heads:
        raise ModelError(f"query width {width} does not divide by num_heads={num_heads}")
    d_head = width // num_heads
    kv_heads = key_out.shape[-1] // d_head
    if kv_heads == 0 or num_heads % kv_heads or key_out.shape[-1] % d_head:
        raise ModelError(f"key width {key_out.shape[-1]} does not fit {num_heads} heads of size {d_head}")
    q = query_out.view(batch, length, num_heads, d_head).transpose(1, 2)
    k = key_out.view(batch, key_out.shape[1], kv_heads, d_head).transpose(1, 2)
    k = k.repeat_interleave(num_heads // kv_heads, dim=1)
    return q @ k.transpose(-1, -2) / math.sqrt(d_head)


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        raise ModelError(f"{type(model).__name__} has no transformers config to read its shape from")
    return config.get_text_config()


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks (config.num_hidden_layers)."""
    return _config(model).num_hidden_layers


def hidden_size(model: nn.Module) -> int:
    """Width D of the hidden states (config.hidden_size)."""
    return _config(model).hidden_size


def num_heads(model: nn.Module) -> int:
    """Number of attention heads H (config.num_attention_heads)."""
    return _config(model).num_attention_heads
