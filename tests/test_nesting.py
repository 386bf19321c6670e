"""The nesting check reads depth off the raw text; it must agree with the decoded value's depth for
every JSON value, whatever its strings hold, and refuse exactly what is deeper than the cap."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfstream.nesting import MAX_DEPTH, depth, nesting_problem

# Strings full of what could fool a scan of the raw text: brackets, quotes, backslashes, escapes.
tricky = st.text(alphabet=st.sampled_from('[]{}"\\/ax\u00e9\U0001f600\n'), max_size=8)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
    max_leaves=60,
)


def decoded_depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((decoded_depth(child) for child in children), default=0)
    return 0


def nested(levels: int, inner: Any) -> Any:
    for i in range(levels):
        inner = [inner] if i % 2 else {"k": inner}
    return inner


@settings(derandomize=True, database=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(min_value=0, max_value=80), st.booleans())
def test_the_depth_of_the_text_is_the_depth_of_the_value(value: Any, wrap: int, ascii_only: bool) -> None:
    value = nested(wrap, value)
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert depth(text.encode()) == decoded_depth(value)
    too_deep = decoded_depth(value) > MAX_DEPTH
    assert (nesting_problem(text) is not None) is too_deep
    assert (nesting_problem(text.encode()) is not None) is too_deep


def test_millions_of_empty_containers_are_shallow_and_one_deep_path_is_found() -> None:
    body = b'{"streamId":"x","pad":[' + b",".join([b"{}", b"[]"] * 500_000) + b"]}"
    assert depth(body) == 3 and nesting_problem(body) is None
    deep = b'{"a":[' + b"[" * 70 + b"]" * 70 + b"," + b",".join([b"{}"] * 100_000) + b"]}"
    assert depth(deep) == 72 and nesting_problem(deep) is not None
    assert nesting_problem('"' + "[" * 500 + '"') is None  # brackets inside a string are text
