"""Models and tokenizers by name — a named offline asset, a local folder or a hub id — with one-line errors.

Every task loads its teacher and students through these, so a missing folder, a folder without ``config.json``,
truncated weights or a tokenizer that does not belong to the model fail the same way whatever the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from kdkit.assets import MODELS, resolve_model
from kdkit.errors import ModelError

# what a saved model's files can raise when they are missing, truncated or do not match its config
LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def first_line(err: Exception) -> str:
    """The first line of an exception's message, cut short, for a one-line error."""
    text = (str(err).splitlines() or [type(err).__name__])[0]
    return text if len(text) <= 200 else text[:199] + "…"


def cannot_load(key: str, name: str, problem: str) -> ModelError:
    return ModelError(f"{key} '{name}' {problem}; give a named model ({', '.join(MODELS)}), a local model folder "
                      f"or a hub id")


def model_config(name: str, key: str) -> tuple[str, Any]:
    """The folder (or hub id) and config of a named model, local folder or hub id; a one-line error naming ``key``
    when there is no model there. A name that can only be a path (absolute, ``./``, ``~``, two slashes) is not
    sent to the hub, whose complaint would be about repo id syntax."""
    path = resolve_model(name)
    local = Path(path).expanduser()
    if local.is_file():
        raise cannot_load(key, name, "is a file, not a model folder")
    if local.is_dir() and not (local / "config.json").is_file():
        raise cannot_load(key, name, "is a folder without config.json, so not a saved model")
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1):
        raise cannot_load(key, name, "does not exist (no such folder)")
    try:
        return path, AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as err:
        raise cannot_load(key, name, f"cannot be loaded ({first_line(err)})") from None


def load_tokenizer(name: str, key: str):
    """The tokenizer of a named model, folder or hub id."""
    path = model_config(name, key)[0]
    try:
        return AutoTokenizer.from_pretrained(path)
    except LOAD_ERRORS as err:
        raise cannot_load(key, name, f"has no usable tokenizer ({first_line(err)})") from None


def load_model(name: str, auto_class: Any, key: str, **kwargs) -> tuple[Any, Any]:
    """``auto_class.from_pretrained`` (with ``kwargs``) and the tokenizer of a named model, folder or hub id,
    after checking the folder has tokenizer files and the tokenizer fits the model's embeddings."""
    path, config = model_config(name, key)
    local = Path(path).expanduser()
    if local.is_dir() and not any((local / file).is_file() for file in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from the config alone and every word would become [UNK]
        raise cannot_load(key, name, f"has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, …)")
    try:
        if getattr(config, "block_embedding", None):
            model = load_block_model(path, auto_class, **kwargs)
        else:
            model = auto_class.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except LOAD_ERRORS as err:
        raise cannot_load(key, name, f"has weights or tokenizer files that cannot be loaded ({first_line(err)})"
                          ) from None
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelError(f"{key} '{name}': its tokenizer has {len(tokenizer)} tokens but the model embeds only "
                         f"{vocab_size} (config vocab_size); the folder mixes a tokenizer and a model that do not "
                         f"belong together")
    return model, tokenizer


def load_block_model(path: str, auto_class: Any, **kwargs):
    """A saved model with a block-wise compressed embedding (``config.block_embedding``), loaded without running
    the modelling code in its folder: the Auto class's own model class with the blocks installed, then the saved
    weights (all of them, strictly)."""
    from safetensors.torch import load_file

    from kdkit.models.block_embedding import install_blocks

    config = AutoConfig.from_pretrained(path, **kwargs)
    config.auto_map = None  # the class comes from transformers here, not from the folder
    model = install_blocks(auto_class._model_mapping[type(config)](config), config.block_embedding)
    files = sorted(Path(path).glob("model*.safetensors"))
    if not files:
        raise OSError(f"no model*.safetensors in {path}")
    state = {}
    for file in files:
        state.update(load_file(file))
    model.load_state_dict(state, strict=True)
    return model.eval()
