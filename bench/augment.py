"""What teacher-labelled augmentation costs: augmented texts produced per second, labelled (teacher cache built)
per second, and the cache size per example.

The classification task's own parts (``data.augment``, :mod:`kdkit.tasks.classification.augment`): ``copies`` (4)
augmented versions of each of ``n`` Rotten Tomatoes training texts, made with the teacher's tokenizer and input
embeddings (replacement probability 0.4, 15 neighbours, span deletion 0.1 up to 3 words), timed in two parts: the
neighbour table (once per vocabulary: cosine top-15 over the teacher's whole-word pieces) and the copies
themselves. Then the copies are tokenised and the teacher's dense logits cached over them
(:func:`kdkit.signals.build_cache`, float32, batch 64): that is the labelling. Each part is repeated and its median
reported; the cache's bytes (keys, offsets and headers included) are divided by the examples it holds.
"""

from __future__ import annotations

import random
import tempfile
import time

from bench import common

COPIES = 4
SETTINGS = {"replace_prob": 0.4, "neighbours": 15, "delete_prob": 0.1, "max_span": 3}
TINY_WORDS = ["good", "great", "fun", "love", "superb", "bad", "awful", "boring", "hate", "dull", "the", "movie",
              "film", "plot", "was", "is", "a", "really", "quite", "story", "actors", "scene"]


def _tiny_setup(n: int, seed: int):
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                                  *TINY_WORDS])})
    teacher = common.tiny_classifier()
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(TINY_WORDS, k=rng.randint(4, 20))) for _ in range(n)]
    return teacher, tokenizer, texts


def run(options: common.Options) -> common.Report:
    from kdkit.signals import SignalSpec, build_cache
    from kdkit.tasks.classification import DataCollator
    from kdkit.tasks.classification.augment import augment_texts, nearest_words

    n, repetitions = (64, 2) if options.quick else (640, 3)
    if options.tiny:
        teacher, tokenizer, texts = _tiny_setup(n, options.seed)
        source = "tiny random BERT, 22-word vocabulary"
    else:
        from kdkit.tasks.classification import load_classifier, load_named_dataset

        teacher, tokenizer = load_classifier(common.TEACHER, common.LABELS, key="teacher")
        texts = list(load_named_dataset("rotten_tomatoes", seed=options.seed).splits["train"]["text"][:n])
        source = common.TEACHER
    teacher = teacher.eval().requires_grad_(False).to(options.device)
    embeddings = teacher.get_input_embeddings().weight.detach().cpu()
    words = sorted({w for text in texts for w in text.split()})
    collator = DataCollator(tokenizer.pad_token_id)
    runs = []
    for _ in range(repetitions):
        start = time.perf_counter()
        nearest_words(embeddings, tokenizer, words, SETTINGS["neighbours"])
        table_s = time.perf_counter() - start
        start = time.perf_counter()
        copies = augment_texts(texts, tokenizer, embeddings, copies=COPIES, seed=options.seed, **SETTINGS)
        augment_s = time.perf_counter() - start - table_s  # augment_texts builds the same table first
        encoded = tokenizer([text for _, text in copies], truncation=True, max_length=common.MAX_LENGTH)
        features = [{"input_ids": ids, "attention_mask": mask}
                    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
        with tempfile.TemporaryDirectory(prefix="kdkit-bench-augment-") as tmp:
            start = time.perf_counter()
            cache = build_cache(f"{tmp}/cache", teacher, features, collator, SignalSpec(logits="dense",
                                dtype="float32"), tokenizer_fingerprint="bench", device=options.device,
                                progress=False)
            label_s = time.perf_counter() - start
            runs.append({"table_s": table_s, "augment_s": augment_s, "label_s": label_s,
                         "examples": len(features), "cached_examples": cache.num_examples,
                         "cache_bytes": cache.nbytes})
    made = len(copies)
    table_s = common.median([r["table_s"] for r in runs])
    augment_s = common.median([r["augment_s"] for r in runs])
    label_s = common.median([r["label_s"] for r in runs])
    cached = runs[-1]["cached_examples"]
    results = {
        "texts": n, "copies": COPIES, "augmented": made, "neighbour_table_s": table_s,
        "augment_s": augment_s, "augmented_per_s": made / augment_s,
        "label_s": label_s, "labelled_per_s": cached / label_s,
        "produced_and_labelled_per_s": made / (table_s + augment_s + label_s),
        "cache_bytes_per_example": runs[-1]["cache_bytes"] / cached, "cached_examples": cached,
        "repetitions": runs,
    }
    settings = {"teacher": source, "data": "random sentences" if options.tiny else "rotten_tomatoes train",
                "max_length": common.MAX_LENGTH, **SETTINGS, "copies": COPIES, "repetitions": repetitions,
                "seed": options.seed}
    table = [{"part": "neighbour table (once per vocabulary)", "seconds": table_s, "per second": None},
             {"part": f"augmented copies ({made})", "seconds": augment_s, "per second": made / augment_s},
             {"part": f"teacher labels: cache build ({cached} distinct)", "seconds": label_s,
              "per second": cached / label_s},
             {"part": "all three", "seconds": table_s + augment_s + label_s,
              "per second": results["produced_and_labelled_per_s"]}]
    notes = [f"Medians over {repetitions} repetitions; {COPIES} copies of each of {n} texts. The cache holds "
             f"{results['cache_bytes_per_example']:.0f} bytes per example (dense float32 logits of "
             f"{teacher.config.num_labels} labels, with its key and offset)."]
    return common.Report("augment", options, settings, results, table, notes)
