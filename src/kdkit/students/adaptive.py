"""Width- and depth-adaptive BERT students (DynaBERT, Hou et al. NeurIPS 2020; SPEC.md §1).

A DynaBERT model holds every sub-network in one set of weights: the sub-network of width multiplier ``m`` keeps, in
every layer, the first ⌈m·H⌉ attention heads and the first ⌈m·I⌉ FFN neurons; the one of depth multiplier ``d``
drops every ⌊1/(1−d)⌉-th layer (DynaBERT's rule: d = 0.5 keeps layers 1, 3, 5, …; d = 0.75 drops every fourth).
The steps, each a function here:

1. :func:`head_neuron_importance`: DynaBERT's first-order importance from the loss gradient on training batches —
   of head h, I_h = Σ_batches |∂L/∂ξ_h| with ξ_h a gate (= 1) on the head's output; of FFN neuron j,
   I_j = Σ_batches |Σ_i W1[j,i]·∂L/∂W1[j,i] + b1[j]·∂L/∂b1[j]| + |Σ_o W2[o,j]·∂L/∂W2[o,j]| (the change of L when
   the neuron is removed, to first order), W1/b1 the intermediate layer, W2 the output layer;
2. :func:`rewire`: permute every layer's heads and neurons by decreasing importance, so the most important come
   first and each narrower sub-network keeps them; the full model computes the same function (up to float rounding
   of the reordered sums);
3. :func:`sub_network`: a context in which the model runs as the sub-network ``(width, depth)``: the attention and
   FFN linear layers are replaced by views on the first rows/columns of the same parameters (gradients reach the
   shared weights) and the dropped layers leave the encoder;
4. :func:`export_sub_network`: the sub-network as a Hugging Face folder holding only its weights: a plain
   ``BertForSequenceClassification`` when it keeps every head, otherwise a BERT whose layers have fewer heads of
   the same size, loaded with ``trust_remote_code=True`` (:mod:`kdkit.models.narrow_bert`; transformers 5 cannot
   express it by configuration).

Only BERT-family encoders (``model.bert.encoder.layer``, ``BertSelfAttention`` with ``query``/``key``/``value``) are
covered; other models raise :class:`~kdkit.errors.ModelError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from kdkit.errors import ModelError


# --- the model's parts -----------------------------------------------------------------------------------------------
def _encoder(model: nn.Module) -> nn.Module:
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers or not hasattr(layers[0].attention.self, "query"):
        raise ModelError(f"width/depth sub-networks cover BERT-family encoders (encoder.layer[i].attention.self.query"
                         f"/key/value); {type(model).__name__} has no such layers")
    return encoder


def num_heads(model: nn.Module) -> int:
    return _encoder(model).layer[0].attention.self.num_attention_heads


def num_neurons(model: nn.Module) -> int:
    return _encoder(model).layer[0].intermediate.dense.out_features


def width_sizes(model: nn.Module, width: float) -> tuple[int, int]:
    """(heads, FFN neurons) kept per layer at width multiplier ``width``: ⌈m·H⌉ and ⌈m·I⌉, at least one each."""
    if not 0 < width <= 1:
        raise ValueError(f"width multiplier must be in (0, 1], got {width}")
    return (max(1, math.ceil(width * num_heads(model) - 1e-9)), max(1, math.ceil(width * num_neurons(model) - 1e-9)))


def kept_layers(n_layers: int, depth: float) -> list[int]:
    """Indices of the layers the depth multiplier ``depth`` keeps: all at 1.0; otherwise every k-th layer is
    dropped, k = round(1/(1−d)) (DynaBERT: d = 0.5 drops layers 2, 4, 6, …, d = 0.75 every fourth, counting from
    1)."""
    if not 0 < depth <= 1:
        raise ValueError(f"depth multiplier must be in (0, 1], got {depth}")
    if depth == 1:
        return list(range(n_layers))
    every = max(2, round(1 / (1 - depth)))
    kept = [i for i in range(n_layers) if (i + 1) % every != 0]
    if not kept:
        raise ValueError(f"depth multiplier {depth} keeps no layer of {n_layers}")
    return kept


# --- 1. importance ---------------------------------------------------------------------------------------------------
def head_neuron_importance(model: nn.Module, batches: Iterable[dict],
                           loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """DynaBERT's importance of every head ``[layers, heads]`` and FFN neuron ``[layers, neurons]``, summed over
    ``batches`` (see the module's formula). ``loss_fn(model, batch)`` gives the loss (default: the model's own loss,
    ``model(**batch).loss``, i.e. cross-entropy on the batch's ``labels``). The model's gradients are left as they
    were; its weights are not changed."""
    encoder = _encoder(model)
    layers = list(encoder.layer)
    heads, head_size = num_heads(model), layers[0].attention.self.attention_head_size
    gates = torch.ones(len(layers), heads, requires_grad=True)
    head_score = torch.zeros(len(layers), heads)
    neuron_score = torch.zeros(len(layers), num_neurons(model))
    saved = {p: p.grad for p in model.parameters()}

    def gate(index):
        def hook(module, args, output):
            context = output[0]
            scale = gates[index].to(context.dtype).repeat_interleave(head_size)
            return (context * scale, *output[1:])
        return hook

    handles = [layer.attention.self.register_forward_hook(gate(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()  # dropout off: the importance of the function the model computes
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            gates.grad = None
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            loss.backward()
            head_score += gates.grad.detach().abs()
            for i, layer in enumerate(layers):
                w1, b1, w2 = layer.intermediate.dense.weight, layer.intermediate.dense.bias, layer.output.dense.weight
                neuron_score[i] += ((w1 * w1.grad).sum(1) + b1 * b1.grad).detach().abs().float()
                neuron_score[i] += (w2 * w2.grad).sum(0).detach().abs().float()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        for p, grad in saved.items():
            p.grad = grad
    return head_score, neuron_score


# --- 2. rewiring -----------------------------------------------------------------------------------------------------
def _take_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight.data = linear.weight.data[index].contiguous()
    if linear.bias is not None:
        linear.bias.data = linear.bias.data[index].contiguous()


def _take_columns(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight.data = linear.weight.data[:, index].contiguous()


@torch.no_grad()
def rewire(model: nn.Module, head_score: torch.Tensor, neuron_score: torch.Tensor) -> None:
    """Permute, in place, every layer's heads and FFN neurons by decreasing score (ties keep their order), so that
    the first heads/neurons are the most important: Q/K/V rows and the attention output's columns move head by
    head, the intermediate layer's rows and the output layer's columns neuron by neuron."""
    layers = list(_encoder(model).layer)
    if tuple(head_score.shape) != (len(layers), num_heads(model)) or \
            tuple(neuron_score.shape) != (len(layers), num_neurons(model)):
        raise ValueError(f"scores of shape {tuple(head_score.shape)} and {tuple(neuron_score.shape)} do not match "
                         f"the model's {len(layers)} layers × {num_heads(model)} heads × {num_neurons(model)} neurons")
    for layer, heads, neurons in zip(layers, head_score, neuron_score):
        attention = layer.attention.self
        size = attention.attention_head_size
        order = torch.sort(heads, descending=True, stable=True).indices
        units = (order[:, None] * size + torch.arange(size)).reshape(-1)
        for linear in (attention.query, attention.key, attention.value):
            _take_rows(linear, units)
        _take_columns(layer.attention.output.dense, units)
        order = torch.sort(neurons, descending=True, stable=True).indices
        _take_rows(layer.intermediate.dense, order)
        _take_columns(layer.output.dense, order)


# --- 3. running a sub-network ----------------------------------------------------------------------------------------
class _Slice(nn.Module):
    """A linear layer computed from the first ``rows`` output rows and/or first ``columns`` input columns of another
    one's parameters (a view: gradients reach the full weight)."""

    def __init__(self, linear: nn.Linear, rows: int | None = None, columns: int | None = None):
        super().__init__()
        self._linear = (linear,)  # a tuple: not a submodule, so the parameters are not registered twice
        self.rows, self.columns = rows, columns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = self._linear[0]
        weight = linear.weight[: self.rows, : self.columns]
        bias = linear.bias if linear.bias is None or self.rows is None else linear.bias[: self.rows]
        return F.linear(x, weight, bias)


@contextmanager
def sub_network(model: nn.Module, width: float = 1.0, depth: float = 1.0) -> Iterator[nn.Module]:
    """Inside the context, ``model`` computes its sub-network at width multiplier ``width`` and depth multiplier
    ``depth`` (training included: gradients reach the shared weights). Restored on exit, even after an error."""
    encoder = _encoder(model)
    full = encoder.layer
    heads, neurons = width_sizes(model, width)
    kept = kept_layers(len(full), depth)
    restore: list[tuple[nn.Module, str, object]] = []

    def swap(owner: nn.Module, name: str, value) -> None:
        restore.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    try:
        if width < 1:
            for layer in full:
                attention = layer.attention.self
                units = heads * attention.attention_head_size
                for name in ("query", "key", "value"):
                    swap(attention, name, _Slice(getattr(attention, name), rows=units))
                swap(attention, "num_attention_heads", heads)
                swap(attention, "all_head_size", units)
                swap(layer.attention.output, "dense", _Slice(layer.attention.output.dense, columns=units))
                swap(layer.intermediate, "dense", _Slice(layer.intermediate.dense, rows=neurons))
                swap(layer.output, "dense", _Slice(layer.output.dense, columns=neurons))
        if len(kept) < len(full):
            swap(encoder, "layer", nn.ModuleList([full[i] for i in kept]))
        yield model
    finally:
        for owner, name, value in reversed(restore):
            setattr(owner, name, value)


# --- 4. export -------------------------------------------------------------------------------------------------------
def _sliced_state(model: nn.Module, width: float, depth: float) -> tuple[dict[str, torch.Tensor], int, int, list[int]]:
    """The sub-network's weights under the BERT model's own parameter names (layers renumbered)."""
    encoder = _encoder(model)
    heads, neurons = width_sizes(model, width)
    kept = kept_layers(len(encoder.layer), depth)
    units = heads * encoder.layer[0].attention.self.attention_head_size
    prefix = next(name for name, module in model.named_modules() if module is encoder) + ".layer."
    cut = {"attention.self.query": "rows", "attention.self.key": "rows", "attention.self.value": "rows",
           "attention.output.dense": "columns", "intermediate.dense": "rows", "output.dense": "columns"}
    state = {}
    for name, tensor in model.state_dict().items():
        if not name.startswith(prefix):
            state[name] = tensor.detach().clone()
            continue
        index, rest = name[len(prefix):].split(".", 1)
        if int(index) not in kept:
            continue
        module, kind = rest.rsplit(".", 1)
        keep = neurons if module in ("intermediate.dense", "output.dense") else units
        how = cut.get(module)
        if how == "rows":
            tensor = tensor[:keep]
        elif how == "columns" and kind == "weight":
            tensor = tensor[:, :keep]
        state[f"{prefix}{kept.index(int(index))}.{rest}"] = tensor.detach().clone().contiguous()
    return state, heads, neurons, kept


def export_sub_network(model: nn.Module, width: float, depth: float, folder: str | Path, tokenizer=None) -> Path:
    """Save the sub-network ``(width, depth)`` of a BERT sequence classifier in ``folder`` with ``tokenizer`` beside
    it, and return the folder (written in a temporary sibling and renamed into place).

    A sub-network that keeps every head is a plain ``BertForSequenceClassification`` (smaller ``intermediate_size``,
    fewer layers). One with fewer heads carries :mod:`kdkit.models.narrow_bert` as its modelling code and loads
    with ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``: ``transformers`` 5
    cannot express fewer heads of the same size by configuration (it removed head pruning), and DeBERTa-v2, whose
    ``attention_head_size`` is configurable, projects the attention output from ``hidden_size`` columns, so no
    built-in class holds the narrower weights. ``config.kdkit_sub_network`` records width, depth, heads, neurons
    and the teacher layers kept."""
    import shutil
    import tempfile

    from transformers import BertConfig, BertForSequenceClassification

    from kdkit.models import narrow_bert

    config = model.config
    if not isinstance(model, BertForSequenceClassification):
        raise ModelError(f"sub-network export covers BERT sequence classifiers; got {type(model).__name__}")
    state, heads, neurons, kept = _sliced_state(model, width, depth)
    new = BertConfig(**{**config.to_dict(), "intermediate_size": neurons, "num_hidden_layers": len(kept)})
    new.kdkit_sub_network = {"width": width, "depth": depth, "heads": heads, "neurons": neurons, "layers": kept}
    narrow = heads < config.num_attention_heads
    if narrow:
        new.kept_heads = heads
        new.architectures = [narrow_bert.NarrowBertForSequenceClassification.__name__]
        new.auto_map = {"AutoModelForSequenceClassification":
                        f"modeling_narrow_bert.{narrow_bert.NarrowBertForSequenceClassification.__name__}"}
        out = narrow_bert.NarrowBertForSequenceClassification(new)
    else:
        out = BertForSequenceClassification(new)
    missing, unexpected = out.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"sub-network export: weights do not match the exported architecture (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        out.save_pretrained(work)
        if narrow:
            (work / "modeling_narrow_bert.py").write_text(Path(narrow_bert.__file__).read_text())
        if tokenizer is not None:
            tokenizer.save_pretrained(work)
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder
