"""Fuzzing POST /v1/predict on a real `slimline serve`: no client input may get a 5xx or a non-JSON answer.

Bodies go out as bytes: httpx cannot encode a lone surrogate as UTF-8, and `json.dumps(..., ensure_ascii=True)`
spells one as the `\\ud800` escape a hostile client would send. One server serves the whole module; the last
test checks that it counted no 5xx and logged no traceback across every example.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import Server, build_bundle, start_server, stop

httpx = pytest.importorskip("httpx")

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANY_CHARACTER = st.characters(codec=None, exclude_categories=())  # hypothesis omits surrogates unless told
SURROGATE = st.characters(codec=None, exclude_categories=(), min_codepoint=0xD800, max_codepoint=0xDFFF)
# st.text(ANY_CHARACTER | SURROGATE) drew no surrogate in 150 examples (hypothesis 6.170), hence lists joined
ANY_TEXT = st.text(ANY_CHARACTER, max_size=40) | st.lists(ANY_CHARACTER | SURROGATE, max_size=40).map("".join)
JSON_SYNTAX_TEXT = st.text(st.sampled_from('[]{}"\\:,'), max_size=20)  # must not fool the nesting pre-check
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT | JSON_SYNTAX_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT | st.just("texts"), inner, max_size=5),
    max_leaves=30)


def encode(value: Any, how: str) -> bytes:
    """`ascii`: surrogates as \\uXXXX escapes; `surrogatepass`: as the raw (invalid UTF-8) bytes ED A0 80."""
    if how == "ascii":
        return json.dumps(value, ensure_ascii=True).encode("ascii")
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bundle = build_bundle(tmp_path_factory.mktemp("fuzz"))
    running = start_server(bundle, tmp_path_factory.mktemp("log") / "serve.log", "--read-timeout-s", "5")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as session:
        yield session


def assert_answered_by_the_rules(client: httpx.Client, body: bytes) -> httpx.Response:
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body[:200], response.text)
    assert response.headers["content-type"] == "application/json", (body[:200], response.text)
    answer = response.json()
    if response.status_code >= 400:
        assert set(answer) == {"error"} and answer["error"]["code"] and answer["error"]["message"], answer
    return response


@FUZZ
@given(value=JSON_VALUES | st.fixed_dictionaries({"texts": st.lists(ANY_TEXT | JSON_VALUES, max_size=5)}),
       how=st.sampled_from(["ascii", "surrogatepass"]))
def test_any_json_value_gets_no_5xx(client: httpx.Client, value: Any, how: str) -> None:
    assert_answered_by_the_rules(client, encode(value, how))


@FUZZ
@given(texts=st.lists(ANY_TEXT, max_size=8), how=st.sampled_from(["ascii", "surrogatepass"]))
def test_any_list_of_texts_gets_predictions_or_a_4xx(client: httpx.Client, texts: list[str], how: str) -> None:
    """The shape that reaches the tokenizer: only text it cannot encode may be refused, never answered 500."""
    response = assert_answered_by_the_rules(client, encode({"texts": texts}, how))
    # what the server decodes: an escaped high-low pair is one character again; raw surrogate bytes are not UTF-8
    seen = json.loads(encode(texts, "ascii")) if how == "ascii" else texts
    valid = bool(texts) and all(not 0xD800 <= ord(char) <= 0xDFFF for text in seen for char in text)
    if valid:
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == len(texts)
    else:
        assert 400 <= response.status_code < 500


@FUZZ
@given(body=st.binary(max_size=2_000))
def test_any_bytes_get_no_5xx(client: httpx.Client, body: bytes) -> None:
    assert_answered_by_the_rules(client, body)


@FUZZ
@given(depth=st.integers(0, 5_000), brackets=st.sampled_from(["[]", "{}", "mixed"]),
       inside_texts=st.booleans())
def test_any_nesting_depth_gets_no_5xx(client: httpx.Client, depth: int, brackets: str, inside_texts: bool) -> None:
    opens, closes = "", ""
    for level in range(depth):
        pair = brackets if brackets != "mixed" else ("[]", "{}")[level % 2]
        opens += pair[0] + ('"k":' if pair == "{}" else "")
        closes = pair[1] + closes
    nested = opens + "1" + closes
    body = f'{{"texts": {nested}}}' if inside_texts else nested
    assert_answered_by_the_rules(client, body.encode())


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@FUZZ
@given(value=JSON_VALUES, how=st.sampled_from(["ascii", "surrogatepass"]))
def test_the_nesting_pre_check_measures_what_json_parses(value: Any, how: str) -> None:
    """Brackets and escaped quotes inside strings must not count: a deep-looking text is a valid request."""
    from slimline.serve.app import json_nesting_depth

    assert json_nesting_depth(encode(value, how)) == _depth(value)


def test_the_fuzzed_server_counted_no_5xx_and_logged_no_traceback(server: Server, client: httpx.Client) -> None:
    metrics = client.get("/metrics").text
    assert 'code="5' not in metrics, [line for line in metrics.splitlines() if 'code="5' in line]
    assert stop(server, signal.SIGINT) == 0, server.output()
    assert "Traceback" not in server.output() and "ERROR" not in server.output(), server.output()
