import pytest

from kdkit.errors import ConfigError
from kdkit.maps import LAYER_MAP_KINDS, build_layer_map, emb_skip, explicit, last_k, skip, uniform


def test_emb_skip_bert_base_to_six_layers():
    # SPEC (CKD): teacher 0, 2, ..., 12 <-> student 0..6
    assert emb_skip(12, 6) == [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]


def test_emb_skip_uses_gcd():
    assert emb_skip(12, 8) == [(0, 0), (3, 2), (6, 4), (9, 6), (12, 8)]
    assert emb_skip(12, 5) == [(0, 0), (12, 5)]


def test_tinybert_uniform():
    assert uniform(12, 4) == [(3, 1), (6, 2), (9, 3), (12, 4)]
    assert uniform(12, 4, include_embedding=True) == [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]
    assert uniform(12, 5) == [(2, 1), (4, 2), (7, 3), (9, 4), (12, 5)]


def test_pkd_skip_and_last():
    assert skip(12, 6) == [(2, 1), (4, 2), (6, 3), (8, 4), (10, 5)]
    assert last_k(12, 6) == [(7, 1), (8, 2), (9, 3), (10, 4), (11, 5)]
    assert skip(12, 3) == [(4, 1), (8, 2)]
    assert last_k(12, 3) == [(10, 1), (11, 2)]


def test_explicit_keeps_order():
    assert explicit([[12, 6], (0, 0)], 12, 6) == [(12, 6), (0, 0)]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(13, 2)], r"layer map pair \(13, 2\): teacher index 13 is outside 0..12"),
        ([(4, 7)], r"layer map pair \(4, 7\): student index 7 is outside 0..6"),
        ([(-1, 0)], r"teacher index -1 is outside 0..12"),
        ([(1, 2, 3)], r"layer map pair \(1, 2, 3\) must be two integers"),
    ],
)
def test_out_of_range_pairs(pairs, message):
    with pytest.raises(ConfigError, match=message):
        build_layer_map("pairs", 12, 6, pairs)


def test_build_layer_map_dispatches_every_kind():
    assert LAYER_MAP_KINDS == ("pairs", "uniform", "skip", "last_k", "emb_skip")
    assert build_layer_map("pairs", 12, 6, [(12, 6)]) == [(12, 6)]
    for kind, fn in [("uniform", uniform), ("skip", skip), ("last_k", last_k), ("emb_skip", emb_skip)]:
        assert build_layer_map(kind, 12, 6) == fn(12, 6)


def test_unknown_kind_lists_valid_kinds():
    message = "layer map kind 'every_other' is not one of pairs, uniform, skip, last_k, emb_skip"
    with pytest.raises(ConfigError, match=message):
        build_layer_map("every_other", 12, 6)


def test_pairs_argument_must_match_kind():
    with pytest.raises(ConfigError, match="kind 'pairs' needs pairs"):
        build_layer_map("pairs", 12, 6)
    with pytest.raises(ConfigError, match="not with kind 'uniform'"):
        build_layer_map("uniform", 12, 6, [(12, 6)])


@pytest.mark.parametrize(
    ("n_teacher", "n_student", "message"),
    [(12, 0, "n_student 0"), (6, 12, r"n_student 12 must be .* 1\.\.6"), (0, 1, "n_teacher 0")],
)
def test_bad_depths(n_teacher, n_student, message):
    with pytest.raises(ConfigError, match=message):
        uniform(n_teacher, n_student)
