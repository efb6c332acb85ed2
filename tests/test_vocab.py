"""Renumbering a student's token ids into a teacher's vocabulary (kdkit.vocab)."""

import numpy as np
import pytest
from tiny import FILLER, NEGATIVE, POSITIVE, SPECIAL
from transformers import BertTokenizer

from kdkit.errors import ModelError
from kdkit.vocab import alignment_rate, map_ids, vocabulary_map

WORDS = POSITIVE + NEGATIVE + FILLER
MPNET_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]


def bert_like():
    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def mpnet_like():
    """MPNet's layout: four special tokens in front of BERT's vocabulary (whose [CLS]… strings stay in it)."""
    vocab = MPNET_SPECIAL + SPECIAL + WORDS + ["<mask>"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, cls_token="<s>", sep_token="</s>",
                         pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def test_specials_map_by_role_and_words_by_string():
    student, teacher = bert_like(), mpnet_like()
    table = vocabulary_map(student, teacher)
    assert table[student.cls_token_id] == teacher.convert_tokens_to_ids("<s>") == 0
    assert table[student.sep_token_id] == 2 and table[student.pad_token_id] == 1 and table[student.unk_token_id] == 3
    assert table[student.mask_token_id] == teacher.convert_tokens_to_ids("<mask>")
    good = student.convert_tokens_to_ids("good")
    assert table[good] == teacher.convert_tokens_to_ids("good") == good + 4  # the shift is found, not assumed


def test_mapped_ids_equal_the_teachers_own_tokenization():
    student, teacher = bert_like(), mpnet_like()
    table = vocabulary_map(student, teacher)
    texts = ["the movie was really good", "boring plot , awful film", "superb", "zebra is quite dull"]
    mapped = [map_ids(table, ids, student) for ids in student(texts)["input_ids"]]
    assert mapped == teacher(texts)["input_ids"]
    assert alignment_rate(mapped, teacher(texts)["input_ids"]) == 1.0


def test_a_token_the_teacher_lacks_is_named():
    student = bert_like()
    teacher = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + POSITIVE)})
    table = vocabulary_map(student, teacher)
    assert table[student.convert_tokens_to_ids("bad")] == -1
    with pytest.raises(ModelError, match="'bad'.*no counterpart"):
        map_ids(table, student("good bad")["input_ids"], student)
    assert map_ids(table, student("good love")["input_ids"], student)  # only the tokens used must map


def test_alignment_rate_counts_whole_sequences():
    assert alignment_rate([[1, 2], [3, 4], [5]], [[1, 2], [3, 5], [5]]) == pytest.approx(2 / 3)
    assert alignment_rate([], []) == 1.0


def test_ids_outside_the_student_vocabulary_are_refused():
    table = np.arange(4)
    with pytest.raises(ModelError, match="outside"):
        map_ids(table, [1, 9])
