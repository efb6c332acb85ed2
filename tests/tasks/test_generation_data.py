"""Generation data: prompt/completion and chat jsonl, the named bbc_summaries and bbc_text sets, seeded carving,
one-line errors."""

from __future__ import annotations

import json

import pytest

from kdkit.errors import DataError
from kdkit.tasks.generation.data import Example, load_generation_data, opening


def _write(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _pairs(n):
    return [{"prompt": f"Say {i}:\n", "completion": f" number {i}", "extra": i} for i in range(n)]


def test_pairs_keep_their_text_and_carve_seeded_splits(tmp_path):
    train = _write(tmp_path / "train.jsonl", _pairs(30))
    data = load_generation_data(train_file=train, seed=3)
    assert [len(data[s]) for s in ("train", "validation", "test")] == [24, 3, 3]
    everything = data["train"] + data["validation"] + data["test"]
    assert sorted(e.completion for e in everything) == sorted(f" number {i}" for i in range(30))
    assert Example("Say 0:\n", " number 0") in everything  # line breaks and leading spaces kept
    again = load_generation_data(train_file=train, seed=3)
    assert again.splits == data.splits
    assert load_generation_data(train_file=train, seed=4).splits != data.splits
    given = load_generation_data(train_file=train, test_file=_write(tmp_path / "t.jsonl", _pairs(2)))
    assert [len(given[s]) for s in ("train", "validation", "test")] == [27, 3, 2]


def test_chat_messages_split_into_prompt_turns_and_the_assistant_completion(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}"},
                          {"role": "assistant", "content": f"A{i}"}]} for i in range(10)]
    data = load_generation_data(train_file=_write(tmp_path / "chat.jsonl", rows),
                                validation_file=_write(tmp_path / "v.jsonl", rows[:1]),
                                test_file=_write(tmp_path / "t.jsonl", rows[:1]))
    first = data["train"][0]
    assert first.is_chat and first.prompt == (("system", "Be brief."), ("user", "Q0")) and first.completion == "A0"


def test_bbc_summaries_is_article_to_headline_with_fixed_splits():
    data = load_generation_data("bbc_summaries")
    sizes = [len(data[s]) for s in ("train", "validation", "test")]
    assert sizes == [1671, 209, 209]  # 2,089 distinct bodies of the 2,225 files, 80/10/10
    example = data["test"][0]
    assert example.prompt.startswith("Article: ") and example.prompt.endswith("\nHeadline:")
    assert example.completion.startswith(" ") and "\n" not in example.completion
    bodies = [{e.prompt for e in data[s]} for s in ("train", "validation", "test")]
    assert not (bodies[0] & bodies[1]) and not (bodies[0] & bodies[2]) and not (bodies[1] & bodies[2])
    assert load_generation_data("bbc_summaries").splits == data.splits


def test_bbc_text_is_headline_then_the_articles_opening_sentences():
    data = load_generation_data("bbc_text")
    assert [len(data[s]) for s in ("train", "validation", "test")] == [1671, 209, 209]
    summaries = load_generation_data("bbc_summaries")
    for text, summary in zip(data["test"][:20], summaries["test"]):  # the same articles, split the same way
        assert text.prompt == summary.completion.strip() + "\n"
        assert summary.source.startswith(text.completion)
        assert text.completion.endswith((".", "!", "?")) or text.completion == summary.source
    assert max(len(e.completion.split()) for e in data["train"]) <= 80


def test_opening_keeps_whole_sentences_within_the_word_budget():
    body = "One two three. Four five! Six seven eight? Nine."
    assert opening(body, 5) == "One two three. Four five!"
    assert opening(body, 4) == "One two three."
    assert opening(body, 1) == "One two three."  # the first sentence even when it alone is over
    assert opening(body, 100) == body


GOOD = {"prompt": "p", "completion": "c"}


@pytest.mark.parametrize("rows, expected", [
    ([GOOD, {"prompt": "p"}], r"line 2, field 'completion' is missing"),
    ([GOOD, {"prompt": "  ", "completion": "c"}], r"line 2, field 'prompt': '  ' is empty or only whitespace"),
    ([{"prompt": "p", "completion": 3}], r"line 1, field 'completion': 3 is not a string"),
    ([GOOD, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     r"line 2 uses 'messages' but line 1 uses 'prompt/completion'"),
    ([{"messages": [{"role": "user", "content": "q"}]}], r"field 'messages': .* at least two messages"),
    ([{"messages": [{"role": "user", "content": "q"}, "hi"]}], r"field 'messages\[1\]': 'hi' is not an object"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}],
     r"field 'messages\[1\].role': 'user' is not 'assistant'"),
    ([{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}],
     r"field 'messages\[0\]', field 'content' is missing"),
    ([GOOD, "null"], r"line 2 is null, not an object"),
    ([GOOD, '{"prompt": "p", '], r"line 2 cannot be parsed as jsonl"),
])
def test_bad_lines_are_one_error_naming_file_line_and_field(tmp_path, rows, expected):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=expected) as err:
        load_generation_data(train_file=path, validation_file=path, test_file=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(DataError, match="unknown generation dataset 'cnn'; named generation datasets: "
                                        "bbc_summaries, bbc_text"):
        load_generation_data("cnn")
    with pytest.raises(DataError, match="exactly one"):
        load_generation_data()
    with pytest.raises(DataError, match="does not exist"):
        load_generation_data(train_file=tmp_path / "none.jsonl")
    with pytest.raises(DataError, match=r"has 3 examples: the validation split .* needs at least 6 examples or "
                                        r"validation_file"):
        load_generation_data(train_file=_write(tmp_path / "small.jsonl", _pairs(3)))
