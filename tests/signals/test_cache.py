"""The teacher-signal cache: equal to the live teacher, order-free, and refusing stale, corrupt or partial caches."""

import json
import math
import random
import shutil

import numpy as np
import pytest
import torch
import transformers as tf
from datasets import Dataset

from tiny import FILLER, NEGATIVE, POSITIVE, SPECIAL
from kdkit.errors import CacheError, ConfigError
from kdkit.signals import (
    CachedTeacher,
    LiveTeacher,
    SignalSpec,
    TeacherCache,
    build_cache,
    example_key,
    fingerprint_model,
    fingerprint_tokenizer,
)
from kdkit.tasks.classification import DataCollator

VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER
COLLATE = DataCollator(pad_token_id=0)
FP16 = dict(rtol=2e-3, atol=2e-3)


def tokenizer(vocab=VOCAB):
    return tf.BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})


def bert(seed=0):
    torch.manual_seed(seed)
    config = tf.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=64, num_labels=3)
    return tf.BertForSequenceClassification(config).eval()


def llama(vocab_size=300, seed=0):
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=2, intermediate_size=24))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked distributions, so top-k holds most of the mass as in real LMs
    return model.eval()


def texts(n, seed=0):
    rng = random.Random(seed)
    words = POSITIVE + NEGATIVE + FILLER
    return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]


def encoded(n, seed=0, tok=None):
    out = (tok or tokenizer())(texts(n, seed))
    return [{"input_ids": ids, "attention_mask": mask, "labels": i % 3}
            for i, (ids, mask) in enumerate(zip(out["input_ids"], out["attention_mask"]))]


def token_data(n, vocab_size=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 24, (n,), generator=g).tolist()
    return [{"input_ids": torch.randint(1, vocab_size, (k,), generator=g).tolist(), "attention_mask": [1] * k}
            for k in lengths]


def build(path, model, data, spec, **kwargs):
    kwargs.setdefault("tokenizer_fingerprint", "tok")
    return build_cache(path, model, data, COLLATE, spec, batch_size=kwargs.pop("batch_size", 8), progress=False,
                       **kwargs)


def reopen(path, model, spec=SignalSpec(), tokenizer_fingerprint="tok", **kwargs):
    return TeacherCache.open(path, spec=spec, teacher_fingerprint=fingerprint_model(model),
                             tokenizer_fingerprint=tokenizer_fingerprint, **kwargs)


DENSE = SignalSpec(hidden_layers=(1, -1), pooled_layers=(2,), pooling="mean")


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A dense fp16 cache of 40 classification examples, 5 of them repeated."""
    model, data = bert(), encoded(35)
    data += data[:5]
    return build(tmp_path_factory.mktemp("dense") / "cache", model, data, DENSE), model, data


def live_signals(model, batch, hidden=True):
    return LiveTeacher(model, hidden_states=hidden)(batch)


def test_dense_signals_equal_live_outputs_to_fp16(dense):
    cache, model, data = dense
    batch = COLLATE([data[i] for i in (7, 3, 30, 12, 0, 21)])  # composition and padding unlike the build's
    got, want = CachedTeacher(cache).to("cpu")(batch), live_signals(model, batch)
    valid = batch["attention_mask"].bool()
    assert got.logits.dtype == torch.float32 and got.logits.shape == want.logits.shape == (6, 3)
    torch.testing.assert_close(got.logits, want.logits, **FP16)
    assert len(got.hidden_states) == 4 and got.hidden_states[0] is None and got.hidden_states[2] is None
    for layer in (1, 3):
        assert got.hidden_states[layer].shape == want.hidden_states[layer].shape
        torch.testing.assert_close(got.hidden_states[layer][valid], want.hidden_states[layer][valid], **FP16)
        assert not got.hidden_states[layer][~valid].any()
    torch.testing.assert_close(got.modules["pooled.2"], want.pooled(2, "mean"), **FP16)
    assert torch.equal(got.attention_mask, batch["attention_mask"])


def test_float32_dense_logits_are_exact(tmp_path):
    model, data = bert(), encoded(12)
    spec = SignalSpec(dtype="float32", hidden_layers=(3,))
    cache = build(tmp_path / "c", model, Dataset.from_list(data), spec, batch_size=1)  # one per forward, as below
    for example in data:
        batch = COLLATE([example])
        got, want = cache.signals(batch), live_signals(model, batch)
        assert torch.equal(got.logits, want.logits)
        assert torch.equal(got.hidden_states[3], want.hidden_states[3])


def test_batch_order_composition_and_epochs_do_not_change_signals(dense):
    cache, model, data = dense
    batch = COLLATE(data[:8])
    reference = cache.signals(batch)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    permuted = cache.signals(COLLATE([data[i] for i in perm]))
    assert torch.equal(permuted.logits, reference.logits[perm])
    assert torch.equal(permuted.modules["pooled.2"], reference.modules["pooled.2"][perm])
    seen = {}
    for epoch in range(3):  # a shuffled pass per epoch: every example always reads the same values
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist()
        for start in range(0, len(order), 6):
            rows = order[start:start + 6]
            logits = cache.signals(COLLATE([data[i] for i in rows])).logits
            for i, value in zip(rows, logits):
                assert torch.equal(seen.setdefault(i, value), value)
    assert len(seen) == len(data)


def test_duplicates_are_stored_once(dense):
    cache, _, data = dense
    assert cache.num_examples == cache.manifest["num_examples"] == 35 < len(data)
    keys = cache.arrays["keys.npy"]
    assert len(np.unique(keys, axis=0)) == len(keys) == 35
    assert all(example_key(example["input_ids"]) in cache for example in data)


def test_example_key_ignores_padding_and_container():
    ids = [2, 7, 9, 3]
    assert example_key(ids) == example_key(torch.tensor(ids)) == example_key(np.array(ids, dtype=np.int64))
    assert len(example_key(ids)) == 16 and example_key(ids) != example_key(ids[::-1])


@pytest.mark.parametrize("k", [4, 16, 64])
def test_topk_keeps_stored_log_probs_and_sums_to_one(tmp_path, k):
    model, data = llama(), token_data(24)
    cache = build(tmp_path / "c", model, data, SignalSpec(logits="topk", top_k=k))
    batch = COLLATE(data[3:11])
    valid = batch["attention_mask"].bool()
    got = cache.signals(batch).logits
    want = live_signals(model, batch, hidden=False).logits.log_softmax(-1)
    assert got.shape == want.shape == (8, batch["input_ids"].shape[1], 300)
    stored = got.topk(k, dim=-1).indices  # the stored entries are above the uniform tail value
    torch.testing.assert_close(got.gather(-1, stored)[valid], want.gather(-1, stored)[valid], rtol=0, atol=1e-2)
    torch.testing.assert_close(got.exp().sum(-1)[valid], torch.ones(int(valid.sum())))
    assert torch.isfinite(got).all()


def test_topk_kl_to_live_is_small_and_shrinks_with_k(tmp_path):
    model, data = llama(), token_data(16)
    batch = COLLATE(data)
    valid = batch["attention_mask"].bool()
    want = live_signals(model, batch, hidden=False).logits.log_softmax(-1)
    kls = []
    for k in (2, 8, 32, 128):
        got = build(tmp_path / f"k{k}", model, data, SignalSpec(logits="topk", top_k=k)).signals(batch).logits
        kls.append(float((want.exp() * (want - got)).sum(-1)[valid].mean()))
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.01 < kls[0], kls


def test_topk_storage_is_130_bytes_per_token_at_k32_for_a_49152_vocabulary(tmp_path):
    model, data = llama(vocab_size=49152), token_data(4, vocab_size=49152)
    cache = build(tmp_path / "c", model, data, SignalSpec(logits="topk", top_k=32))
    arrays = cache.manifest["arrays"]
    assert arrays["topk_indices.npy"]["dtype"] == "uint16"
    logit_bytes = sum(math.prod(arrays[name]["shape"]) * np.dtype(arrays[name]["dtype"]).itemsize
                      for name in ("topk_logprobs.npy", "topk_indices.npy", "tail_logmass.npy"))
    tokens = cache.manifest["num_tokens"]
    assert tokens == sum(len(example["input_ids"]) for example in data)
    assert logit_bytes / tokens == 130
    assert cache.nbytes == sum(f.stat().st_size for f in cache.path.glob("*.npy"))


def test_separate_teacher_tokenizer_keys_and_runs_on_teacher_ids(tmp_path):
    model = bert()
    student = encoded(10, seed=1)
    teacher = encoded(10, seed=2)  # stands in for the same texts under another tokenizer
    data = [{**s, "teacher_input_ids": t["input_ids"], "teacher_attention_mask": t["attention_mask"]}
            for s, t in zip(student, teacher)]
    cache = build(tmp_path / "c", model, data, SignalSpec(dtype="float32"))
    assert all(example_key(t["input_ids"]) in cache for t in teacher)
    batch = COLLATE(data[2:7])
    got = cache.signals(batch)
    torch.testing.assert_close(got.logits, live_signals(model, batch, hidden=False).logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(got.attention_mask, batch["teacher_attention_mask"])
    batch["input_ids"] = torch.zeros_like(batch["input_ids"])  # the student's ids play no part in the lookup
    assert torch.equal(cache.signals(batch).logits, got.logits)


def test_stale_cache_says_what_changed(dense):
    cache, model, _ = dense
    changed = bert()
    with torch.no_grad():
        changed.classifier.bias[0] += 1e-3
    assert fingerprint_model(changed) != fingerprint_model(model) == fingerprint_model(bert())
    with pytest.raises(CacheError, match="the teacher weights changed.*kdkit cache"):
        reopen(cache.path, changed, DENSE)
    assert fingerprint_tokenizer(tokenizer()) == fingerprint_tokenizer(tokenizer())
    other = fingerprint_tokenizer(tokenizer(VOCAB + ["extra"]))
    assert other != fingerprint_tokenizer(tokenizer())
    with pytest.raises(CacheError, match=r"stale .*: the tokenizer changed"):
        reopen(cache.path, model, DENSE, tokenizer_fingerprint=other)
    with pytest.raises(CacheError, match=r"the spec \(pooling: 'mean' -> 'cls'\)"):
        reopen(cache.path, model, SignalSpec(hidden_layers=(1, -1), pooled_layers=(2,)))
    assert reopen(cache.path, model, DENSE).num_examples == 35


@pytest.fixture
def copy(dense, tmp_path):
    cache, model, _ = dense
    return shutil.copytree(cache.path, tmp_path / "cache"), model


def test_flipped_byte_fails_verification_naming_the_file(copy):
    path, model = copy
    file = path / "hidden.3.npy"
    raw = bytearray(file.read_bytes())
    raw[-7] ^= 0x01
    file.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=r"hidden\.3\.npy' is corrupt"):
        reopen(path, model, DENSE)
    assert reopen(path, model, DENSE, verify=False).num_examples == 35  # sizes still match: only sha256 sees it


def test_truncated_file_fails_even_without_verification(copy):
    path, model = copy
    file = path / "logits.npy"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CacheError, match=r"logits\.npy' is truncated"):
        reopen(path, model, DENSE, verify=False)


def test_interrupted_build_is_never_opened(copy):
    path, model = copy
    leftover = path.with_name(f"{path.name}.tmp-4242")
    path.rename(leftover)  # a complete-looking directory that never got its final name
    with pytest.raises(CacheError, match=r"no teacher cache .*cache\.tmp-4242 is an interrupted build"):
        reopen(path, model, DENSE)
    with pytest.raises(CacheError, match="no teacher cache"):
        reopen(leftover, model, DENSE)


def test_failed_rebuild_keeps_the_previous_cache(copy):
    path, model = copy
    before = reopen(path, model, DENSE).signals(COLLATE(encoded(4))).logits
    calls = 0

    def fail_on_second_batch(module, args, kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")

    handle = model.register_forward_pre_hook(fail_on_second_batch, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            build(path, model, encoded(30, seed=5), DENSE)
    finally:
        handle.remove()
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache"]
    assert torch.equal(reopen(path, model, DENSE).signals(COLLATE(encoded(4))).logits, before)


def test_missing_example_raises_with_rebuild_hint(dense):
    cache, _, _ = dense
    unseen = encoded(3, seed=99)
    assert example_key(unseen[0]["input_ids"]) not in cache
    with pytest.raises(CacheError, match=r"3 of 3 examples not in the teacher cache .*rebuild with `kdkit cache"):
        cache.signals(COLLATE(unseen))


def test_build_refuses_to_replace_a_directory_that_is_not_a_cache(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="not a teacher cache"):
        build(tmp_path, bert(), encoded(2), SignalSpec())
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def cut_manifest(path):
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])


@pytest.mark.parametrize("damage", [lambda path: (path / "manifest.json").unlink(), cut_manifest],
                         ids=["no manifest", "partial manifest"])
def test_build_replaces_an_incomplete_cache(copy, damage):
    path, model = copy
    damage(path)  # what an interrupted copy of a cache leaves
    with pytest.raises(CacheError, match="no teacher cache|cannot be read"):
        reopen(path, model, DENSE)
    data = encoded(6, seed=7)
    cache = build(path, model, data, DENSE)
    assert cache.num_examples == 6 and reopen(path, model, DENSE).num_examples == 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache"]


@pytest.mark.parametrize("extra, found", [("embeddings.npy", "embeddings.npy"), ("checkpoints/", "checkpoints"),
                                          ("manifest.json", "has format 'other-tool'")])
def test_build_refuses_a_folder_with_files_a_cache_does_not_have(copy, extra, found):
    path, model = copy
    (path / "manifest.json").unlink()
    if extra.endswith("/"):
        (path / extra).mkdir()
    else:
        (path / extra).write_text(json.dumps({"format": "other-tool"}))
    kept = sorted(p.name for p in path.iterdir())
    with pytest.raises(CacheError, match=f"not a teacher cache .*{found}"):
        build(path, model, encoded(2), DENSE)
    assert sorted(p.name for p in path.iterdir()) == kept


def test_spec_round_trips_and_rejects_bad_values():
    spec = SignalSpec(logits="topk", top_k=8, hidden_layers=[1, 2], pooled_layers=(0,))
    assert SignalSpec.from_dict(spec.to_dict()) == spec and spec.hidden_layers == (1, 2)
    with pytest.raises(ConfigError, match="'logits' is 'sparse'"):
        SignalSpec(logits="sparse")
    with pytest.raises(ConfigError, match="stores nothing"):
        SignalSpec(logits=None)
    with pytest.raises(ConfigError, match="key 'topk' is unknown"):
        SignalSpec.from_dict({"topk": 3})
