"""Universal-KD's first stage: linear probes fitted on the frozen teacher's pooled layer states.

The teacher runs once over the training split (no gradients) and the pooled state of every block is kept in
memory; then one linear probe per layer is fitted to the gold labels by cross-entropy with a few epochs of Adam.
Fitted probes are stored under the kdkit cache directory, keyed by the teacher's weights, the training examples
and the fitting settings, so a rerun or a resume reads them back instead of fitting again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdkit.assets import cache_dir
from kdkit.capture import Representations
from kdkit.losses.universal import ProbeSet
from kdkit.signals.cache import fingerprint_model
from kdkit.signals.live import LiveTeacher, teacher_inputs


def pool(states: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pool ``(B, L, D)`` states like :meth:`Representations.pooled` (``(B, D)`` states are returned as they are)."""
    if states.dim() == 2:
        return states
    return Representations(hidden_states=(states,), attention_mask=mask).pooled(0, how)


@torch.no_grad()
def teacher_pooled_states(teacher: nn.Module, dataset, collator, layers: list[int], pooling: str, *,
                          device: str = "cpu", batch_size: int = 64) -> tuple[list[Tensor], Tensor]:
    """The teacher's pooled states of ``layers`` over ``dataset`` (one ``(N, D)`` float32 tensor per layer, on the
    CPU) and the gold labels ``(N,)``."""
    live = LiveTeacher(teacher, hidden_states=True).to(device)
    states: list[list[Tensor]] = [[] for _ in layers]
    labels = []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        reps = live(batch)
        for store, layer in zip(states, layers):
            store.append(reps.pooled(layer, pooling).float().cpu())
        labels.append(batch["labels"].cpu())
    return [torch.cat(s) for s in states], torch.cat(labels)


def fit_probes(probes: ProbeSet, states: list[Tensor], labels: Tensor, *, epochs: int, lr: float,
               batch_size: int = 32, seed: int = 0) -> float:
    """Fit every probe to the labels by CE (summed over layers: the probes share no parameters, so each gets
    its own gradient); returns the last epoch's mean CE per layer."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(probes.parameters(), lr=lr)
    probes.train()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            logits = probes([s[rows] for s in states])  # (b, n, C)
            loss = F.cross_entropy(logits.flatten(0, 1), labels[rows].repeat_interleave(logits.shape[1]))
            optimizer.zero_grad()
            (loss * logits.shape[1]).backward()
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        last = total / count
    return last


def _examples_digest(dataset) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for example in dataset:
        inputs = teacher_inputs(example)
        digest.update(json.dumps([inputs["input_ids"], example.get("labels")]).encode())
    return digest.hexdigest()


def train_teacher_probes(teacher: nn.Module, dataset, collator, layers: list[int], num_classes: int, *,
                         pooling: str, epochs: int, lr: float, device: str = "cpu", batch_size: int = 64,
                         seed: int = 0, store: Path | None = None) -> ProbeSet:
    """Probes for the teacher's ``layers`` fitted on ``dataset``, read from ``store`` (default: under the kdkit
    cache directory) when the same teacher, data and settings fitted them before."""
    key = {"teacher": fingerprint_model(teacher), "examples": _examples_digest(dataset), "layers": layers,
           "pooling": pooling, "epochs": epochs, "lr": lr, "seed": seed, "classes": num_classes}
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()
    path = (store or cache_dir() / "probes") / f"{digest}.safetensors"
    if path.is_file():
        weights = load_file(path)
        dims = [weights[f"probes.{i}.weight"].shape[1] for i in range(len(layers))]
        probes = ProbeSet(dims, num_classes)
        probes.load_state_dict(weights)
        return probes.requires_grad_(False).eval()
    states, labels = teacher_pooled_states(teacher, dataset, collator, layers, pooling, device=device,
                                           batch_size=batch_size)
    torch.manual_seed(seed)  # the probes' initialisation, so a refit gives the same probes
    probes = ProbeSet([s.shape[1] for s in states], num_classes)
    ce = fit_probes(probes, states, labels, epochs=epochs, lr=lr, seed=seed)
    print(f"[kdkit] fitted {len(layers)} teacher probes ({pooling} pooling, {epochs} epochs): mean CE {ce:.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in probes.state_dict().items()}, tmp)
    tmp.replace(path)  # atomic: a concurrent or interrupted run never reads half a file
    return probes.requires_grad_(False).eval()
