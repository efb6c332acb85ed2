"""Cached teacher signals: run the frozen teacher once over a dataset, then read its outputs from disk.

A cache is one entry of the artifact store (:mod:`kdkit.store`), a directory (format version 2)::

    manifest.json        written last (:func:`kdkit.store.seal`): byte size and sha256 of every file, and as its
                         meta the format version, the SignalSpec, the teacher and tokenizer fingerprints, counts,
                         and dtype and shape of every array file
    keys.npy             (N, 16) uint8, sorted example keys (:func:`example_key`); row i of every per-example
                         array belongs to keys[i]
    offsets.npy          (N + 1,) int64, when there are per-token arrays: example i owns rows offsets[i]:offsets[i+1]
    logits.npy           dense: (N, C) for (B, C) logits, or (T, V) for (B, L, V) logits (T = all real tokens)
    topk_logprobs.npy    top-k: (R, k) log-probabilities, R = N or T rows as for dense
    topk_indices.npy     (R, k) uint16 (int32 when V > 65536)
    tail_logmass.npy     (R,) log of the probability mass outside the top k
    hidden.<l>.npy       (T, D) per-token hidden states of layer l (0 = embedding output)
    pooled.<l>.npy       (N, D) pooled hidden states of layer l

Ragged per-token data is stored flat with ``offsets`` (only real tokens, in position order), so padding costs
nothing. Values are stored in ``spec.dtype``; at k=32 with fp16 top-k costs 32*2 + 32*2 + 2 = 130 bytes per token.

Why ``.npy`` opened with ``np.load(mmap_mode="r")``: a memory map is zero-copy, reads only the rows a batch needs,
and the operating system's page cache is shared by every rank and dataloader worker on a machine, so N processes
do not hold N copies; the format needs no dependency beyond numpy and is readable without kdkit. Keys are sorted so
a lookup is a binary search on the mapped array instead of a dict rebuilt in every process.

Safety: a build goes through :func:`kdkit.store.atomic_dir` (written into ``<dir>.tmp-<pid>``, flushed, sealed
with the manifest last, renamed into place), so a reader never sees a half-written cache. :meth:`TeacherCache.open`
refuses a cache whose spec, teacher weights or tokenizer changed, always checks file sizes (a truncated file), and
with ``verify=True`` checks every file's sha256 (a corrupted file), both through :func:`kdkit.store.verify`.
Hashing runs at about 1.2 GB/s on one core (page cache): verifying 10k classification examples (dense fp16 logits,
220 KB) takes under 1 ms, 768-d pooled vectors for them ~15 ms, per-token hidden states of long sequences (GBs)
seconds; ``verify=False`` skips it for such caches.

Top-k logits are returned as full-vocabulary log-probabilities: the k stored entries are exact up to fp16
rounding, every other entry is log(tail_mass / (V - k)), and the row is renormalised (log_softmax). Since
log p = z - logZ, softmax(log p / T) equals softmax(z / T) on the stored entries' ratios at every temperature;
the uniform tail is the approximation, so losses on softened distributions (KL) are close and shrink with k,
while losses on raw logit values (MSE on logits) see log-probabilities, not logits.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kdkit.capture import Representations
from kdkit.errors import CacheError, ConfigError, DataError
from kdkit.progress import progress as progress_bar
from kdkit.signals.live import LiveTeacher, teacher_inputs
from kdkit.store import LEFTOVER, MANIFEST, atomic_dir, digest, read_manifest, seal
from kdkit.store import verify as verify_files

FORMAT = "kdkit-teacher-cache"
FORMAT_VERSION = 2  # 2: the manifest is kdkit.store's, with this cache's description as its meta
REBUILD = "rebuild with `kdkit cache RECIPE --rebuild`"
# every file a build writes, so a folder holding only these is an incomplete cache that a build may replace
_ARRAY = re.compile(r"(keys|offsets|logits|topk_logprobs|topk_indices|tail_logmass|(hidden|pooled)\.\d+)\.npy")
# manifests whose folder a build may replace: the store's, and a version 1 cache's (this format at its top level)
_OWN_FORMATS = ("kdkit-artifact", FORMAT)


@dataclass(frozen=True)
class SignalSpec:
    """What the cache stores.

    logits: "dense" (every value), "topk" (top_k log-probabilities per row plus the tail mass) or None.
    hidden_layers: hidden-state indices whose per-token states are stored; pooled_layers: indices whose pooled
    vectors (``pooling`` "cls" or "mean", see :meth:`Representations.pooled`) are stored.
    dtype: dtype of stored values; float32 keeps dense classification logits exact.
    """

    logits: Literal["dense", "topk"] | None = "dense"
    top_k: int = 32
    hidden_layers: tuple[int, ...] = ()
    pooled_layers: tuple[int, ...] = ()
    pooling: Literal["cls", "mean"] = "cls"
    dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self):
        # tuples, so a spec read back from JSON (lists) compares equal to the one it was written from
        object.__setattr__(self, "hidden_layers", tuple(int(i) for i in self.hidden_layers))
        object.__setattr__(self, "pooled_layers", tuple(int(i) for i in self.pooled_layers))
        for key, value, valid in (("logits", self.logits, ("dense", "topk", None)),
                                  ("pooling", self.pooling, ("cls", "mean")),
                                  ("dtype", self.dtype, ("float16", "float32"))):
            if value not in valid:
                raise ConfigError(f"cache spec '{key}' is {value!r}; valid: {', '.join(map(repr, valid))}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"cache spec 'top_k' is {self.top_k!r}; it must be a positive integer")
        if self.logits is None and not self.hidden_layers and not self.pooled_layers:
            raise ConfigError("cache spec stores nothing: set logits, hidden_layers or pooled_layers")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SignalSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"cache spec key '{unknown[0]}' is unknown; valid: {', '.join(sorted(known))}")
        return cls(**data)


def example_key(input_ids: Sequence[int] | Tensor | np.ndarray) -> bytes:
    """16-byte blake2b digest of an example's unpadded token ids (as little-endian int32)."""
    if isinstance(input_ids, Tensor):
        input_ids = input_ids.detach().cpu().numpy()
    return hashlib.blake2b(np.asarray(input_ids, dtype="<i4").tobytes(), digest_size=16).digest()


def real_token_ids(example: dict) -> np.ndarray:
    """The unpadded token ids that identify one dataset example: the teacher's own when it has a tokenizer of its
    own (``teacher_input_ids``), else the student's."""
    inputs = teacher_inputs(example)
    return np.asarray(inputs["input_ids"])[np.asarray(inputs["attention_mask"], dtype=bool)]


def fingerprint_model(model: nn.Module) -> str:
    """Hash of every parameter and persistent buffer: name, shape, dtype and bytes; changes with any weight."""
    hasher = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes: numpy has no bfloat16
    return hasher.hexdigest()


def fingerprint_tokenizer(tokenizer: Any) -> str:
    """Hash of the tokenizer's class name, sorted vocabulary and special tokens."""
    return digest({"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
                   "special": tokenizer.special_tokens_map})


def build_cache(path: str | Path, teacher: nn.Module, dataset: Any, collator: Any, spec: SignalSpec, *,
                tokenizer_fingerprint: str, batch_size: int = 64, device: str | torch.device = "cpu",
                progress: bool = True, forward=None) -> "TeacherCache":
    """Run the frozen teacher once over ``dataset`` and write its signals to the cache directory ``path``.

    ``dataset``: a ``datasets.Dataset`` or list of dicts with ``input_ids``/``attention_mask`` (unpadded), plus
    ``teacher_input_ids``/``teacher_attention_mask`` when the teacher has its own tokenizer: keys and teacher
    inputs then come from those, and ``tokenizer_fingerprint`` must be the teacher tokenizer's. ``collator``
    pads a list of examples into a batch (e.g. :class:`kdkit.tasks.classification.DataCollator`). Examples with
    the same key are stored once. An existing cache at ``path`` is replaced only once the new one is complete; so is
    an incomplete one (array files without a readable manifest: an interrupted copy), but never a folder holding
    other files.

    ``forward(capture, batch)`` is how the task calls the teacher (default: its ids and attention mask). Per-token
    signals are stored at the real tokens, or, when examples carry a ``signal_mask`` (0/1 per token, e.g. the
    positions that predict a completion), at its 1s only: the collated batch's ``signal_mask`` then marks them in
    the teacher's output, which may cover fewer positions than the input (the last ones).
    """
    path = Path(path)
    foreign = _foreign_content(path)
    if foreign:
        raise CacheError(f"refusing to replace '{path}': it is not a teacher cache ({foreign}); pick an empty or "
                         f"new directory")
    teacher_fingerprint = fingerprint_model(teacher)
    live = LiveTeacher(teacher, **({"forward": forward} if forward is not None else {}),
                       hidden_states=bool(spec.hidden_layers or spec.pooled_layers)).to(device)

    first: dict[bytes, tuple[int, int]] = {}  # key -> (index of its first example, number of real tokens)
    for index, example in enumerate(dataset):
        ids = real_token_ids(example)
        rows = int(np.sum(example["signal_mask"])) if "signal_mask" in example else len(ids)
        first.setdefault(example_key(ids), (index, rows))
    if not first:
        raise DataError("build_cache: the dataset has no examples")
    keys = sorted(first)
    lengths = np.array([first[key][1] for key in keys], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # rows are in key order for lookups, but batches go in length order so they carry little padding
    order = np.argsort(lengths, kind="stable")

    with atomic_dir(path) as tmp:
        writer = _Writer(tmp, len(keys), offsets)
        logits_info = None
        with progress_bar(total=len(keys), desc="caching teacher signals", unit="ex", disable=not progress) as bar:
            for start in range(0, len(keys), batch_size):
                rows = order[start:start + batch_size]
                batch = collator([dataset[first[keys[row]][0]] for row in rows])
                batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                reps = live(batch)
                logits_info = _store(writer, rows, reps, spec, batch.get("signal_mask")) or logits_info
                bar.update(len(rows))
        writer.add("keys.npy", np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 16))
        if writer.per_token:
            writer.add("offsets.npy", offsets)
        seal(tmp, {
            "format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_dict(),
            "teacher_fingerprint": teacher_fingerprint, "tokenizer_fingerprint": tokenizer_fingerprint,
            "num_examples": len(keys), "num_tokens": int(offsets[-1]), "logits": logits_info,
            "num_hidden_states": writer.num_hidden_states, "arrays": writer.close(),
        })
    return TeacherCache.open(path, spec=spec, teacher_fingerprint=teacher_fingerprint,
                             tokenizer_fingerprint=tokenizer_fingerprint, verify=False)


def _foreign_content(path: Path) -> str | None:
    """What makes ``path`` more than a complete or incomplete teacher cache, or None when a build may replace it."""
    if not path.exists():
        return None
    if not path.is_dir():
        return "it is a file"
    other = sorted(p.name for p in path.iterdir() if p.is_dir() or not (_ARRAY.fullmatch(p.name) or p.name == MANIFEST))
    if other:
        return f"it holds '{other[0]}'"
    if not (path / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):  # cut short: a copy interrupted while writing it
        return None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    return None if found in _OWN_FORMATS else f"its {MANIFEST} has format {found!r}"


def _store(writer: "_Writer", rows: np.ndarray, reps: Representations, spec: SignalSpec,
           signal_mask: Tensor | None = None) -> dict | None:
    """Write one batch's signals (per-token ones where ``signal_mask``, else the attention mask, is 1); returns the
    logits' layout for the manifest."""
    mask = (reps.attention_mask if signal_mask is None else signal_mask).bool().cpu().numpy()
    dtype = np.dtype(spec.dtype)
    info = None
    if spec.logits is not None:
        if reps.logits is None:
            raise ConfigError("cache spec 'logits' is set, but the teacher returns no logits; set logits: null")
        logits = reps.logits.float()
        per_token, size = logits.dim() == 3, logits.shape[-1]
        info = {"per_token": per_token, "size": size}
        if spec.logits == "dense":
            writer.write("logits.npy", rows, logits, mask, per_token, dtype)
        else:
            if spec.top_k >= size:
                raise ConfigError(f"cache spec 'top_k' is {spec.top_k}, but the teacher has only {size} "
                                  f"logits; use logits: dense")
            logp = logits.log_softmax(-1)
            top = logp.topk(spec.top_k, dim=-1)
            tail = logp.scatter(-1, top.indices, -math.inf).logsumexp(-1)
            index_dtype = np.dtype(np.uint16 if size <= 65536 else np.int32)
            writer.write("topk_logprobs.npy", rows, top.values, mask, per_token, dtype)
            writer.write("topk_indices.npy", rows, top.indices, mask, per_token, index_dtype)
            writer.write("tail_logmass.npy", rows, tail, mask, per_token, dtype)
    if spec.hidden_layers or spec.pooled_layers:
        n = writer.num_hidden_states = len(reps.hidden_states)
        for layer in (*spec.hidden_layers, *spec.pooled_layers):
            if not -n <= layer < n:
                raise ConfigError(f"cache spec layer {layer} is outside 0..{n - 1} (0 = embedding output)")
        for layer in spec.hidden_layers:
            writer.write(f"hidden.{layer % n}.npy", rows, reps.hidden_states[layer], mask, True, dtype)
        for layer in spec.pooled_layers:
            writer.write(f"pooled.{layer % n}.npy", rows, reps.pooled(layer, spec.pooling), mask, False, dtype)
    return info


class _Writer:
    """Array files of a cache being built, memory-mapped so a cache larger than RAM can be written."""

    def __init__(self, folder: Path, num_examples: int, offsets: np.ndarray):
        self.folder, self.num_examples, self.offsets = folder, num_examples, offsets
        self.arrays: dict[str, np.memmap] = {}
        self.per_token: set[str] = set()
        self.num_hidden_states: int | None = None

    def write(self, name: str, rows: np.ndarray, values: Tensor, mask: np.ndarray, per_token: bool,
              dtype: np.dtype) -> None:
        values = values.detach().cpu().numpy()
        if per_token:  # keep real tokens only, each example's at its own offsets
            values = values[mask]
            rows = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
            self.per_token.add(name)
        if name not in self.arrays:
            total = int(self.offsets[-1]) if per_token else self.num_examples
            self.arrays[name] = np.lib.format.open_memmap(self.folder / name, mode="w+", dtype=dtype,
                                                          shape=(total, *values.shape[1:]))
        self.arrays[name][rows] = values

    def add(self, name: str, values: np.ndarray) -> None:
        np.save(self.folder / name, values)

    def close(self) -> dict[str, dict[str, Any]]:
        """Write every memory map back to its file and describe each array for the manifest's meta (the store's
        seal adds sizes and checksums)."""
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()  # closes the maps before they are hashed
        entries = {}
        for file in sorted(self.folder.glob("*.npy")):
            header = np.load(file, mmap_mode="r")
            entries[file.name] = {"dtype": str(header.dtype), "shape": list(header.shape),
                                  "per_token": file.name in self.per_token}
        return entries


class TeacherCache:
    """A built cache, memory-mapped read-only; open it with :meth:`open` or get it from :func:`build_cache`.

    ``manifest`` is the cache's description (the meta of its store manifest) with each array's bytes and sha256
    added; ``arrays`` maps file names to their memory maps (see the module docstring); ``nbytes`` is the size of
    all array files.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.spec = SignalSpec.from_dict(manifest["spec"])
        self.num_examples: int = manifest["num_examples"]
        self.nbytes: int = sum(entry["bytes"] for entry in manifest["arrays"].values())
        self.arrays = arrays
        self._keys = arrays["keys.npy"].view("S16").ravel()  # 16-byte strings compare as bytes, so sorted order holds

    @classmethod
    def open(cls, path: str | Path, *, spec: SignalSpec, teacher_fingerprint: str, tokenizer_fingerprint: str,
             verify: bool = True) -> "TeacherCache":
        """Open the cache at ``path`` after checking it is current (spec, teacher weights, tokenizer) and intact
        (file sizes; sha256 of every file when ``verify``). Raises :class:`CacheError` saying what is wrong."""
        path = Path(path)
        if LEFTOVER.search(path.name) or not (path / MANIFEST).is_file():
            leftovers = sorted(p.name for p in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"))
            hint = f" ({', '.join(leftovers)} is an interrupted build: delete it)" if leftovers else ""
            raise CacheError(f"no teacher cache at '{path}'{hint}; {REBUILD}")
        try:
            stored = read_manifest(path)
        except CacheError as err:
            raise CacheError(f"teacher cache {err}; {REBUILD}") from None
        manifest = stored["meta"]
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise CacheError(f"teacher cache '{path}' has format version {manifest.get('version')!r}; this kdkit "
                             f"reads version {FORMAT_VERSION}; {REBUILD}")
        unlisted = sorted(set(manifest["arrays"]) - set(stored["files"]))
        if unlisted:
            raise CacheError(f"teacher cache manifest '{path / MANIFEST}' has no size or checksum for "
                             f"'{unlisted[0]}'; {REBUILD}")
        manifest["arrays"] = {name: {**stored["files"][name], **entry} for name, entry in manifest["arrays"].items()}
        changed = []
        if manifest["teacher_fingerprint"] != teacher_fingerprint:
            changed.append("the teacher weights")
        if manifest["tokenizer_fingerprint"] != tokenizer_fingerprint:
            changed.append("the tokenizer")
        built = SignalSpec.from_dict(manifest["spec"]).to_dict()
        fields = [f"{key}: {built[key]!r} -> {value!r}" for key, value in spec.to_dict().items() if built[key] != value]
        if fields:
            changed.append(f"the spec ({', '.join(fields)})")
        if changed:
            raise CacheError(f"stale teacher cache '{path}': {', '.join(changed)} changed since it was built; "
                             f"{REBUILD}")
        try:
            verify_files(path, hashes=verify)
        except CacheError as err:
            raise CacheError(f"teacher cache {err}; {REBUILD}") from None
        arrays = {}
        for name, entry in manifest["arrays"].items():
            file = path / name
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise CacheError(f"teacher cache file '{file}' cannot be read ({err}); {REBUILD}") from None
            if list(arrays[name].shape) != entry["shape"] or str(arrays[name].dtype) != entry["dtype"]:
                raise CacheError(f"teacher cache file '{file}' has shape {arrays[name].shape} "
                                 f"{arrays[name].dtype}, the manifest says {entry['shape']} {entry['dtype']}; "
                                 f"{REBUILD}")
        return cls(path, manifest, arrays)

    def _find(self, keys: Sequence[bytes]) -> np.ndarray:
        """Row of each key, or -1 where the cache does not hold it."""
        query = np.array(keys, dtype="S16")
        rows = np.searchsorted(self._keys, query).clip(max=len(self._keys) - 1)
        return np.where(self._keys[rows] == query, rows, -1)

    def __contains__(self, key: bytes) -> bool:
        return bool(self._find([key])[0] >= 0)

    def signals(self, batch: dict, expand_topk: bool = True) -> Representations:
        """The teacher's :class:`Representations` for a batch, read from the cache.

        Rows are found by the keys of the batch's (teacher_)input_ids under (teacher_)attention_mask, so batch
        order, composition and padding do not matter. Tensors are float32 on the batch's device, padded to its
        length (0 at padding; top-k rows are uniform there), or placed where the batch's ``signal_mask`` is 1
        when it has one (see :func:`build_cache`); ``hidden_states`` has None for layers not cached and pooled
        vectors are in ``modules["pooled.<layer>"]``. Top-k logits become full-vocabulary log-probabilities, or,
        with ``expand_topk=False`` (a vocabulary of 50k makes ``(B, L, V)`` costly), stay as they are stored:
        ``modules["topk"]`` = (log-probabilities ``(B, L, k)``, token ids ``(B, L, k)``, tail log-mass ``(B, L)``)
        and ``logits`` None.
        """
        inputs = teacher_inputs(batch)
        mask = inputs["attention_mask"]
        ids, valid_np = inputs["input_ids"].cpu().numpy(), mask.bool().cpu().numpy()
        rows = self._find([example_key(row[keep]) for row, keep in zip(ids, valid_np)])
        if (rows < 0).any():
            raise CacheError(f"{int((rows < 0).sum())} of {len(rows)} examples not in the teacher cache "
                             f"'{self.path}': the data or tokenizer changed since it was built; {REBUILD}")
        valid = (batch["signal_mask"] if "signal_mask" in batch else mask).bool()
        reps = Representations(attention_mask=mask)
        spec, info = self.spec, self.manifest["logits"]
        if spec.logits == "dense":
            reps.logits = self._gather("logits.npy", rows, valid)
        elif spec.logits == "topk" and not expand_topk:
            reps.modules["topk"] = tuple(self._gather(f"{name}.npy", rows, valid)
                                         for name in ("topk_logprobs", "topk_indices", "tail_logmass"))
        elif spec.logits == "topk":
            logp = self._gather("topk_logprobs.npy", rows, valid)
            index = self._gather("topk_indices.npy", rows, valid)
            tail = self._gather("tail_logmass.npy", rows, valid) - math.log(info["size"] - spec.top_k)
            full = tail.unsqueeze(-1).expand(*tail.shape, info["size"]).scatter(-1, index, logp)
            reps.logits = full.log_softmax(-1)  # fp16 rounding leaves the sum a little off 1
        if spec.hidden_layers:
            n = self.manifest["num_hidden_states"]
            states: list[Tensor | None] = [None] * n
            for layer in spec.hidden_layers:
                states[layer % n] = self._gather(f"hidden.{layer % n}.npy", rows, valid)
            reps.hidden_states = tuple(states)
        for layer in spec.pooled_layers:
            n = self.manifest["num_hidden_states"]
            reps.modules[f"pooled.{layer}"] = self._gather(f"pooled.{layer % n}.npy", rows, valid)
        return reps

    def _gather(self, name: str, rows: np.ndarray, valid: Tensor) -> Tensor:
        """Rows of one array as a tensor on the batch's device: (B, ...) per example, (B, L, ...) per token."""
        array = self.arrays[name]
        if self.manifest["arrays"][name]["per_token"]:
            offsets = self.arrays["offsets.npy"]
            values = np.concatenate([array[offsets[r]:offsets[r + 1]] for r in rows])
        else:
            values = array[rows]  # fancy indexing copies, so the tensor never aliases the read-only map
        dtype = torch.int64 if values.dtype.kind in "iu" else torch.float32
        values = torch.from_numpy(values.astype(np.int64) if dtype == torch.int64 else values)
        values = values.to(valid.device, dtype)
        if not self.manifest["arrays"][name]["per_token"]:
            return values
        out = torch.zeros(*valid.shape, *values.shape[1:], dtype=dtype, device=valid.device)
        out[valid] = values
        return out


class CachedTeacher:
    """A teacher signal source with the interface of :class:`~kdkit.signals.LiveTeacher`, read from a cache
    (``expand_topk``: see :meth:`TeacherCache.signals`)."""

    def __init__(self, cache: TeacherCache, expand_topk: bool = True):
        self.cache, self.expand_topk = cache, expand_topk

    def to(self, device: torch.device | str) -> "CachedTeacher":
        return self  # nothing to move: signals are created on each batch's device

    def __call__(self, batch: dict) -> Representations:
        return self.cache.signals(batch, self.expand_topk)
