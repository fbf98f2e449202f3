"""Row decoding and validation, including a hypothesis fuzz of the reader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langgraft.data import rows
from langgraft.data.rows import RowError, chat_row, decode_json_line, pretrain_row


def _reason(fn, *args) -> str:
    with pytest.raises(RowError) as e:
        fn(*args)
    return e.value.reason


def test_pretrain_row_fields_and_defaults() -> None:
    r = pretrain_row({"source": "Q", "target": "A", "category": "zh"}, None, False, "lbl")
    assert (r.source, r.target, r.category) == ("Q", "A", "zh")
    r = pretrain_row({"target": "A", "source": None}, None, True, "lbl")
    assert (r.source, r.category) == ("", "unknown")
    r = pretrain_row({"text": "T"}, "text", False, "lbl")
    assert (r.source, r.target, r.category) == ("", "T", "lbl")
    assert pretrain_row({"text": "T", "category": "c"}, "text", False, "lbl").category == "c"


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"\xff{}", "invalid_utf8"),
        (b'{"target": "a"', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"source": "a", "category": "c"}', "missing_field"),
        (b'{"target": "a"}', "missing_field"),
        (b'{"target": 5, "category": "c"}', "wrong_type"),
        (b'{"target": "a", "source": [], "category": "c"}', "wrong_type"),
        (b'{"target": "a", "category": 3}', "wrong_type"),
        (b'{"target": "a", "category": ""}', "wrong_type"),
        (b'{"target": "\\ud800", "category": "c"}', "invalid_unicode"),
        (b"[" * 100000, "malformed_json"),
    ],
)
def test_bad_pretrain_rows(line: bytes, reason: str) -> None:
    assert _reason(lambda: pretrain_row(decode_json_line(line), None, False, "x")) == reason
    assert reason in rows.BAD_INPUT_REASONS


def test_text_field_missing_or_wrong_type() -> None:
    assert _reason(pretrain_row, {"body": "x"}, "text", False, "l") == "missing_field"
    assert _reason(pretrain_row, {"text": None}, "text", False, "l") == "wrong_type"


def test_chat_row_aliases_and_trailing_turns() -> None:
    r = chat_row(
        {
            "messages": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"role": "gpt", "content": "A"},
                {"role": "user", "content": "dangling"},
            ]
        },
        "sft",
    )
    assert r.messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    assert r.category == "sft"  # no category: the input's name


@pytest.mark.parametrize(
    "obj, reason",
    [
        ({}, "missing_field"),
        ({"messages": "hi"}, "wrong_type"),
        ({"messages": ["hi"]}, "wrong_type"),
        ({"messages": [{"content": "x"}]}, "missing_field"),
        ({"messages": [{"role": "user"}]}, "missing_field"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "bad_message"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]},
            "bad_message",
        ),
        ({"messages": [{"role": "user", "content": 1}]}, "wrong_type"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no_assistant_turn"),
        ({"messages": []}, "no_assistant_turn"),
    ],
)
def test_bad_chat_rows(obj: dict, reason: str) -> None:
    assert _reason(chat_row, obj, True) == reason


def test_missing_category_needs_the_flag_for_source_target_rows_only() -> None:
    assert _reason(pretrain_row, {"target": "A"}, None, False, "lbl") == "missing_field"
    msgs = {"messages": [{"role": "assistant", "content": "x"}]}
    assert chat_row(msgs, "lbl").category == "lbl"
    assert chat_row({**msgs, "category": "c"}, "lbl").category == "c"
    assert _reason(chat_row, {**msgs, "category": ""}, "lbl") == "wrong_type"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
row_like = st.fixed_dictionaries(
    {},
    optional={
        "source": json_values,
        "target": json_values,
        "category": json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": st.sampled_from(["user", "human", "assistant", "gpt", "system", "x"])
                    | json_values,
                    "content": json_values,
                },
            ),
            max_size=4,
        )
        | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), row_like.map(lambda o: json.dumps(o).encode())))
def test_fuzz_reader_only_ever_raises_row_errors(line: bytes) -> None:
    """Any line either validates or fails with a known reason, never another exception."""
    for parse in (
        lambda o: pretrain_row(o, None, False, "l"),
        lambda o: pretrain_row(o, "target", False, "l"),
        lambda o: chat_row(o, "l"),
    ):
        try:
            parse(decode_json_line(line))
        except RowError as e:
            assert e.reason in rows.BAD_INPUT_REASONS + rows.FILTERED_REASONS
            assert e.message
