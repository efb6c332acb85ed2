import math

import pytest
import torch

from kdkit.students import embedding as ec


def test_weighted_svd_hand_checked():
    # rank 1 of rows (3,0), (0,1), (0,2): plain SVD keeps the first column (energy 9 > 5), weighted error
    # 10·1 + 1·4 = 14 under weights (1, 10, 1); the weighted SVD keeps the second (weighted energy 14 > 9): error 9
    e = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    q = torch.tensor([1.0, 10.0, 1.0])
    u, v = ec.weighted_factors(e, q, 1)
    assert ec.weighted_error(e, q, u, v) == pytest.approx(9.0, abs=1e-9)
    u0, v0 = ec.weighted_factors(e, None, 1)
    assert ec.weighted_error(e, q, u0, v0) == pytest.approx(14.0, abs=1e-9)
    assert ec.weighted_error(e, None, u0, v0) == pytest.approx(5.0, abs=1e-9)


def test_weighted_svd_is_no_worse_than_plain_svd_under_its_weights():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 12, generator=g)
    q = torch.rand(40, generator=g) * 10 + 0.1
    for rank in (1, 3, 6):
        weighted = ec.weighted_error(e, q, *ec.weighted_factors(e, q, rank))
        plain = ec.weighted_error(e, q, *ec.weighted_factors(e, None, rank))
        assert weighted <= plain + 1e-9
    full = ec.weighted_factors(e, q, 12)
    assert ec.weighted_error(e, q, *full) < 1e-9


def test_frequency_and_tfidf_hand_values():
    docs = [[0, 0, 1], [1, 2]]
    assert ec.frequency_scores(docs, 4).tolist() == [3.0, 3.0, 2.0, 1.0]
    scores = ec.tfidf_scores(docs, 4, alpha=0.5, beta=0.5)
    # id 0: tf̄ = 0.5 + 0.25·(2/2) = 0.75, df 1 → idf = max(log(2/3), 0) + 1 = 1
    # id 1: tf̄ = 0.5 + 0.25·(1/2 + 1) = 0.875, idf 1; id 2: 0.5 + 0.25 = 0.75; id 3: unseen, 0.5 · (log(1) + 1)
    assert scores.tolist() == pytest.approx([0.75, 0.875, 0.75, 0.5])
    with pytest.raises(ValueError):
        ec.tfidf_scores([], 4)


def test_kmeans_blocks_order_by_importance():
    scores = torch.tensor([1000.0, 900.0, 10.0, 12.0, 1.0, 1.1, 1.05])
    blocks = ec.kmeans_blocks(scores, 3)
    assert blocks.tolist() == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="positive"):
        ec.kmeans_blocks(torch.tensor([1.0, 0.0]), 2)


@pytest.mark.parametrize("budget", [400, 1000, 2500, 6000])
def test_ranks_meet_the_budget_and_follow_importance(budget):
    sizes, importance, dim = [20, 50, 200], [30.0, 5.0, 1.0], 16
    ranks = ec.allocate_ranks(sizes, importance, dim, budget)
    assert ec.block_parameters(sizes, ranks, dim) <= budget
    assert ranks[0] >= ranks[1] >= ranks[2] >= 1
    assert all(r <= min(n, dim) for r, n in zip(ranks, sizes))
    # the largest scale that fits: what is left is less than one more rank of some block that can still grow
    growable = [n + dim for n, r in zip(sizes, ranks) if r < min(n, dim)]
    assert not growable or budget - ec.block_parameters(sizes, ranks, dim) < max(growable)


def test_budget_too_small_is_refused():
    with pytest.raises(ValueError, match="cannot hold rank 1"):
        ec.allocate_ranks([20, 50], [2.0, 1.0], 16, 50)
    with pytest.raises(ValueError, match="cannot hold"):
        ec.svd_embedding(torch.randn(30, 8), 20)


def _zipf_matrix(v: int = 120, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(v, d, generator=g)
    scores = 1000.0 / torch.arange(1, v + 1, dtype=torch.float64)
    return e, scores


@pytest.mark.parametrize("refine", [0, 2])
def test_compress_meets_the_budget_and_beats_svd_on_weighted_error(refine):
    e, scores = _zipf_matrix()
    budget = 1200
    block = ec.compress_embedding(e, scores, budget, n_blocks=3, refine=refine)
    svd = ec.svd_embedding(e, budget)
    assert block.num_parameters() <= budget and svd.num_parameters() <= budget
    assert len(block.ranks) == 3 and block.ranks[0] > block.ranks[-1]
    dense_block, dense_svd = block.dense().detach(), svd.dense().detach()
    err = lambda d: float((scores * (e.double() - d.double()).pow(2).sum(1)).sum())  # noqa: E731
    assert err(dense_block) < err(dense_svd)


def test_refinement_keeps_every_block_and_moves_words():
    e, scores = _zipf_matrix(seed=1)
    blocks = ec.kmeans_blocks(scores, 3)
    refined = ec.refine_blocks(e, scores, blocks, 1200, iterations=3)
    assert set(refined.tolist()) == {0, 1, 2}
    assert not torch.equal(refined, blocks)


def test_replace_embedding_in_a_tied_causal_lm(tmp_path):
    from transformers import AutoModelForCausalLM

    from tiny import make_tiny_lm

    model = AutoModelForCausalLM.from_pretrained(make_tiny_lm(tmp_path / "lm"))
    assert ec.tied_output(model)
    ids = torch.tensor([[3, 5, 7, 2]])
    matrix = ec.embedding_matrix(model)
    v, d = matrix.shape
    full_rank = ec.svd_embedding(matrix, (v + d) * d)  # rank d: the same matrix, so the same logits
    before = model(ids).logits
    ec.replace_embedding(model, full_rank)
    assert torch.allclose(model(ids).logits, before, atol=1e-4)
    assert model.config.tie_word_embeddings is False
    assert not list(model.get_output_embeddings().parameters())  # the factors are counted and saved once
    assert not any(name.startswith("lm_head") for name in model.state_dict())
    small = ec.compress_embedding(matrix, ec.frequency_scores([[3, 3, 5]], v), budget=(v + d) * 4, n_blocks=2)
    ec.replace_embedding(model, small)
    assert math.isfinite(float(model(ids, labels=ids).loss))
    with pytest.raises(ValueError, match="compressed embedding is"):
        ec.replace_embedding(model, ec.svd_embedding(torch.randn(v + 1, d), 200))


_LOAD_WITHOUT_KDKIT = """
import sys, json, torch
sys.modules["kdkit"] = None  # any import of kdkit fails: plain transformers only
from transformers import {auto}
model = {auto}.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
print(json.dumps(model(ids).logits.tolist()))
"""


@pytest.mark.parametrize("kind", ["causal", "classifier"])
def test_export_loads_with_plain_transformers(tmp_path, kind):
    import json
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tiny import make_tiny_lm, make_tiny_teacher

    if kind == "causal":
        auto, model = "AutoModelForCausalLM", AutoModelForCausalLM.from_pretrained(make_tiny_lm(tmp_path / "m"))
    else:
        auto = "AutoModelForSequenceClassification"
        model = AutoModelForSequenceClassification.from_pretrained(make_tiny_teacher(tmp_path / "m"))
    matrix = ec.embedding_matrix(model)
    v, d = matrix.shape
    scores = ec.frequency_scores([list(range(v))[::3], [4, 4, 5]], v)
    ec.replace_embedding(model, ec.compress_embedding(matrix, scores, (v + d) * 6, n_blocks=2))
    model.eval()
    ec.save_with_code(model, tmp_path / "out", auto)
    ids = [[3, 5, 7, 2]]
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits
    done = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_KDKIT.format(auto=auto), str(tmp_path / "out"),
                           json.dumps(ids)], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1",
                           "PATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.allclose(torch.tensor(json.loads(done.stdout.strip().splitlines()[-1])), expected, atol=1e-5)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["block_embedding"]["ranks"] == model.get_input_embeddings().ranks


def test_kdkit_loads_a_compressed_export_without_its_code(tmp_path):
    from transformers import AutoModelForCausalLM

    from kdkit.loading import load_model
    from tiny import make_tiny_lm

    folder = make_tiny_lm(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    matrix = ec.embedding_matrix(model)
    v, d = matrix.shape
    ec.replace_embedding(model, ec.compress_embedding(matrix, ec.frequency_scores([[1, 2, 2]], v), (v + d) * 5))
    assert ec.auto_class_name(model) == "AutoModelForCausalLM"
    ec.save_with_code(model.eval(), tmp_path / "out")
    (tmp_path / "out" / "modeling_block_embedding.py").write_text("raise SystemExit('the folder code ran')\n")
    for file in (folder / "tokenizer.json", folder / "tokenizer_config.json"):
        (tmp_path / "out" / file.name).write_bytes(file.read_bytes())
    loaded, _ = load_model(str(tmp_path / "out"), AutoModelForCausalLM, "student.model")
    ids = torch.tensor([[3, 5, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)
    assert loaded.get_input_embeddings().ranks == model.get_input_embeddings().ranks


@pytest.mark.parametrize("method", ["tfidf", "svd"])
def test_a_recipe_distils_a_compressed_student_and_exports_it(tiny_recipe, tmp_path, method):
    import json

    from transformers import AutoModelForSequenceClassification

    from kdkit import api
    from kdkit.loading import load_model

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_recipe["teacher"]["model"])
    v, d = teacher.get_input_embeddings().weight.shape
    tiny_recipe["student"]["embedding"] = {"method": method, "fraction": 0.25, "blocks": 2}
    api.distill(tiny_recipe)
    out = tmp_path / "run" / "student"
    config = json.loads((out / "config.json").read_text())
    spec = config["block_embedding"]
    assert sum(r * (n + d) for n, r in zip(spec["block_sizes"], spec["ranks"])) <= 0.25 * v * d
    assert len(spec["ranks"]) == (2 if method == "tfidf" else 1)
    assert config["auto_map"] == {"AutoModelForSequenceClassification": "modeling_block_embedding."
                                  "BlockBertForSequenceClassification"}
    student, _ = load_model(str(out), AutoModelForSequenceClassification, "student.model")
    dense = sum(p.numel() for p in teacher.parameters())
    assert sum(p.numel() for p in student.parameters()) < dense - 0.75 * v * d  # 2 of 4 blocks gone, and the matrix


def test_compression_is_refused_by_a_task_without_training_texts(tmp_path):
    from kdkit.engine.pipeline import TrainerTask
    from kdkit.errors import ConfigError

    class NoTexts(TrainerTask):
        name = "none"

    recipe = type("R", (), {"task": "none"})()
    with pytest.raises(ConfigError, match="student.embedding"):
        NoTexts().training_texts(recipe, None)


def test_embedding_section_needs_exactly_one_budget():
    from pydantic import ValidationError

    from kdkit.config import EmbeddingConfig

    with pytest.raises(ValidationError, match="one of 'fraction'"):
        EmbeddingConfig(method="svd")
    with pytest.raises(ValidationError, match="one of 'fraction'"):
        EmbeddingConfig(fraction=0.1, parameters=100)
    with pytest.raises(ValidationError):
        EmbeddingConfig(fraction=1.5)


class _Bag(torch.nn.Module):
    """Sum of word vectors → a read-out of their first coordinate, which only word 3 has."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.words = torch.nn.Embedding(10, 4)
        with torch.no_grad():
            self.words.weight.copy_(torch.randn(10, 4, generator=g))
            self.words.weight[:, 0] = 0.0
            self.words.weight[3, 0] = 2.0
        self.readout = torch.tensor([1.0, 0.0, 0.0, 0.0])

    def get_input_embeddings(self):
        return self.words

    def forward(self, ids):
        return self.words(ids).sum(1) @ self.readout


def test_gates_keep_the_words_the_task_needs():
    model = _Bag()
    g = torch.Generator().manual_seed(1)
    batches = iter(lambda: torch.randint(0, 8, (16, 5), generator=g), None)  # ids 8, 9 never seen
    before = model.words.weight.detach().clone()

    def loss(ids):
        target = (model.words.weight[ids].detach().sum(1) @ model.readout)  # the ungated output
        return (model(ids) - target).pow(2).mean()

    seen = torch.tensor([True] * 8 + [False] * 2)
    gates = ec.gate_scores(model, batches, loss, seen, steps=150, target=0.5, weight=10.0, lr=0.1)
    assert gates[3] > 0.85  # the word the read-out needs stays open
    assert gates[[0, 1, 2, 4, 5, 6, 7]].max() < 0.5  # the others, which the loss does not see, are pulled down
    assert gates[8] == gates[9] == gates[seen].min() and (gates > 0).all()
    assert torch.equal(model.words.weight, before) and model.words.weight.requires_grad  # model untouched
    assert not model.words._forward_hooks


def test_a_recipe_compresses_by_trained_gates(tiny_recipe, tmp_path):
    import json

    from kdkit import api

    tiny_recipe["student"]["embedding"] = {"method": "differentiable", "fraction": 0.3, "blocks": 2,
                                           "gate_steps": 4}
    api.distill(tiny_recipe)
    spec = json.loads((tmp_path / "run" / "student" / "config.json").read_text())["block_embedding"]
    (n0, _), (r0, r1) = spec["block_sizes"], spec["ranks"]
    assert len(spec["ranks"]) == 2 and (r0 >= r1 or r0 == min(n0, spec["embedding_dim"]))  # more, or all it can
