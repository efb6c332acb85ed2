"""The bi-encoder student as a sentence-transformers folder.

Beside the HF files (``config.json``, weights, tokenizer) the folder gets the module list sentence-transformers
reads: Transformer (this folder), mean Pooling (specials included, as the student pools) and, for cosine students,
Normalize. The files are written in the layout every sentence-transformers release since 2.x loads (the layout of
the published all-MiniLM-L6-v2), not with ``SentenceTransformer.save`` of the installed version: a folder saved by
6.x names module classes that 5.x cannot import. ``SentenceTransformer(folder)`` then gives the vectors kdkit's
:func:`~kdkit.tasks.retrieval.task.encode` gives, for texts within ``max_seq_length`` tokens (it truncates queries
and passages at that one length; kdkit cuts queries at ``data.query_max_length``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from kdkit.capture import hidden_size

ST_VERSION = "5.0.0"  # the format version the files follow; loads in sentence-transformers 5.x and 6.x


def save_sentence_transformer(folder: str | Path, model, *, max_seq_length: int, similarity: str) -> Path:
    """Write the sentence-transformers module files into ``folder`` (which already holds the HF model and its
    tokenizer)."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "__version__": {"sentence_transformers": ST_VERSION, "transformers": transformers.__version__,
                            "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": similarity},
        "1_Pooling/config.json": {"word_embedding_dimension": hidden_size(model), "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
    }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
    if similarity == "cosine":
        (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder
