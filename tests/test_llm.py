"""The provider-neutral parts of the LLM integrations, mostly pure (no event loop).

Caps rewrite requests in every tool shape the SDKs use (Chat Completions,
Responses, Anthropic); retry hints parse from headers; settings refuse misuse;
the shared module imports no SDK.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from returns.pipeline import is_successful

from cycleguard import Amount, Caps, Unit
from cycleguard._llm import (
    FOLD_CHARS,
    ActualSource,
    CapsForbidCall,
    GuardSettings,
    ProviderConnectionFailed,
    ProviderFailed,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    TextTally,
    apply_caps,
    charge_metadata,
    charge_metrics,
    is_retryable_provider_error,
    retry_after_seconds,
    tool_name,
)
from cycleguard.errors import UsageError
from cycleguard.metering import PriceBook, Rates, TokenCounter, TokenUsage

if TYPE_CHECKING:
    from collections.abc import Mapping

    JsonObject = Mapping[str, object]

CHAT_KEYS = ("max_completion_tokens", "max_tokens")
DENY_SHELL = Caps(tool_denylist=("shell",))


def chat_tool(name: str) -> JsonObject:
    return {"type": "function", "function": {"name": name, "parameters": {}}}


def responses_tool(name: str) -> JsonObject:
    return {"type": "function", "name": name, "parameters": {}}


def anthropic_tool(name: str) -> JsonObject:
    return {"name": name, "input_schema": {"type": "object"}}


def capped(params: JsonObject, caps: Caps, keys: tuple[str, ...] = CHAT_KEYS) -> JsonObject:
    result = apply_caps(params, caps, output_keys=keys)
    assert is_successful(result), result
    return result.unwrap()


def refused(params: JsonObject, caps: Caps, keys: tuple[str, ...] = CHAT_KEYS) -> str:
    result = apply_caps(params, caps, output_keys=keys)
    assert not is_successful(result), result
    failure = result.failure()
    assert isinstance(failure, CapsForbidCall)
    assert failure.caps == caps
    return failure.reason


# The output ceiling ----------------------------------------------------------------------


def test_no_caps_is_an_unchanged_copy() -> None:
    params: JsonObject = {"model": "m", "max_tokens": 9}
    result = apply_caps(params, None, output_keys=CHAT_KEYS).unwrap()
    assert result == params
    assert result is not params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_completion_tokens": 800}, {"max_completion_tokens": 256}),
        ({"max_completion_tokens": 100}, {"max_completion_tokens": 100}),
        ({"max_tokens": 900}, {"max_tokens": 256}),
        (
            {"max_completion_tokens": 900, "max_tokens": 50},
            {"max_completion_tokens": 256, "max_tokens": 50},
        ),
        ({}, {"max_completion_tokens": 256}),
        ({"max_tokens": None}, {"max_completion_tokens": 256}),
    ],
    ids=["lowered", "kept", "legacy-key", "both-keys", "added", "none-replaced"],
)
def test_output_ceiling_is_min_of_requested_and_cap(
    params: JsonObject, expected: JsonObject
) -> None:
    """Every ceiling the request sets is lowered to the cap; none set: the first key is added."""
    assert capped(params, Caps(max_tokens=256)) == expected


def test_the_input_is_not_mutated() -> None:
    params = {"max_completion_tokens": 800, "tools": [chat_tool("shell"), chat_tool("a")]}
    capped(params, Caps(max_tokens=1, tool_denylist=("shell",)))
    assert params == {"max_completion_tokens": 800, "tools": [chat_tool("shell"), chat_tool("a")]}


@pytest.mark.parametrize("cap", [0, -5])
def test_a_cap_of_zero_or_less_forbids_the_call(cap: int) -> None:
    assert refused({"max_tokens": 10}, Caps(max_tokens=cap)) == (
        f"caps.max_tokens is {cap}: no output may be generated"
    )


def test_an_endpoint_without_output_ignores_the_ceiling_cap() -> None:
    """Embeddings produce no output: a zero cap does not stop them."""
    assert capped({"input": "x"}, Caps(max_tokens=0), keys=()) == {"input": "x"}


# Tools -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [chat_tool, responses_tool, anthropic_tool], ids=["chat", "responses", "anthropic"]
)
def test_denylist_filters_every_tool_shape(make: object) -> None:
    assert callable(make)
    tools = [make("search"), make("shell")]
    assert capped({"tools": tools}, DENY_SHELL) == {"tools": [make("search")]}


def test_a_non_empty_allowlist_wins_and_names_are_case_sensitive() -> None:
    caps = Caps(tool_allowlist=("search",), tool_denylist=("search",))
    tools = [chat_tool("search"), chat_tool("Search"), chat_tool("calc")]
    assert capped({"tools": tools}, caps) == {"tools": [chat_tool("search")]}


def test_hosted_tools_are_named_by_type() -> None:
    assert tool_name({"type": "web_search"}) == "web_search"
    assert tool_name("not a tool") is None
    stores: list[str] = []
    tools: list[JsonObject] = [
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": stores},
    ]
    caps = Caps(tool_denylist=("web_search",))
    assert capped({"tools": tools}, caps) == {"tools": [tools[1]]}


def test_removing_every_tool_drops_the_tool_settings() -> None:
    """The APIs refuse ``tools: []`` and tool options without tools."""
    params: JsonObject = {
        "model": "m",
        "tools": [chat_tool("shell")],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    assert capped(params, DENY_SHELL) == {"model": "m"}


@pytest.mark.parametrize(
    "choice",
    [
        "required",
        {"type": "any"},
        {"type": "allowed_tools", "mode": "required", "tools": [responses_tool("shell")]},
    ],
    ids=["openai-required", "anthropic-any", "allowed-required"],
)
def test_a_choice_that_demands_a_tool_cannot_lose_every_tool(choice: object) -> None:
    params = {"tools": [chat_tool("shell")], "tool_choice": choice}
    assert "caps forbid" in refused(params, DENY_SHELL)


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "function", "function": {"name": "shell"}},
        {"type": "function", "name": "shell"},
        {"type": "tool", "name": "shell"},
    ],
    ids=["chat", "responses", "anthropic"],
)
def test_forcing_a_forbidden_tool_is_refused(choice: object) -> None:
    params = {"tools": [chat_tool("search"), chat_tool("shell")], "tool_choice": choice}
    assert refused(params, DENY_SHELL) == "tool_choice forces 'shell', which the caps forbid"


def test_forcing_an_allowed_tool_is_kept() -> None:
    choice = {"type": "tool", "name": "search"}
    params = {"tools": [anthropic_tool("search"), anthropic_tool("shell")], "tool_choice": choice}
    assert capped(params, DENY_SHELL) == {
        "tools": [anthropic_tool("search")],
        "tool_choice": choice,
    }


def test_allowed_tools_choices_are_filtered_in_both_shapes() -> None:
    chat_choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [chat_tool("search"), chat_tool("shell")]},
    }
    flat_choice = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [responses_tool("search"), responses_tool("shell")],
    }
    chat = capped({"tool_choice": chat_choice}, DENY_SHELL)
    assert chat["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [chat_tool("search")]},
    }
    flat = capped({"tool_choice": flat_choice}, DENY_SHELL)
    assert flat["tool_choice"] == {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [responses_tool("search")],
    }
    emptied = {"type": "allowed_tools", "mode": "auto", "tools": [responses_tool("shell")]}
    assert capped({"tool_choice": emptied}, DENY_SHELL) == {"tool_choice": "none"}


def test_caps_without_tool_lists_leave_tools_alone() -> None:
    params: JsonObject = {"tools": [chat_tool("shell")], "tool_choice": "required"}
    assert capped(params, Caps(cooldown_ms=5, max_steps_remaining=2)) == params


# Retry hints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"RETRY-AFTER-MS": "junk", "retry-after": "4"}, 4.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: now
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=1445412480.0 + 60) == expected


def test_retryable_provider_errors() -> None:
    error = Exception("x")
    assert is_retryable_provider_error(ProviderRateLimited(error=error))
    assert is_retryable_provider_error(ProviderConnectionFailed(error=error, timed_out=True))
    assert is_retryable_provider_error(ProviderStatusError(error=error, status=429))
    assert not is_retryable_provider_error(ProviderStatusError(error=error, status=401))
    stream = ProviderStreamError(error=error, error_type="invalid_request_error", message="m")
    assert not is_retryable_provider_error(stream)
    assert not is_retryable_provider_error(ProviderFailed(error=error))


# What a commit records ----------------------------------------------------------------------


def test_metadata_marks_every_non_usage_amount_as_estimated() -> None:
    assert charge_metadata(ActualSource.ESTIMATE, partial=False) == {
        "actual_source": "estimate",
        "estimated": True,
    }


def test_metrics_without_usage_keep_latency_and_model() -> None:
    metrics = charge_metrics(None, latency_ms=7, model_version="m")
    assert (metrics.tokens_input, metrics.latency_ms, metrics.model_version) == (None, 7, "m")
    plain = charge_metrics(
        TokenUsage(input_tokens=3, output_tokens=4), latency_ms=0, model_version=None
    )
    assert plain.custom is None


# Settings --------------------------------------------------------------------------------


def test_settings_refuse_misuse() -> None:
    with pytest.raises(UsageError, match="pricing"):
        GuardSettings(unit=Unit.USD_MICROCENTS)
    with pytest.raises(UsageError, match="CREDITS"):
        GuardSettings(unit=Unit.CREDITS)
    with pytest.raises(UsageError, match="estimate is in USD_MICROCENTS"):
        GuardSettings(estimate=Amount.usd_microcents(5))
    with pytest.raises(UsageError, match="default_output_tokens"):
        GuardSettings(default_output_tokens=-1)
    with pytest.raises(UsageError, match="cleanup_timeout"):
        GuardSettings(cleanup_timeout=0)
    book = PriceBook({"m": Rates.per_million(input=1, output=2)})
    usd = GuardSettings(unit=Unit.USD_MICROCENTS, pricing=book, estimate=Amount.usd_microcents(9))
    assert usd.estimate == Amount.usd_microcents(9)


# Counting streamed text --------------------------------------------------------------------


@pytest.mark.anyio
async def test_text_tally_folds_in_batches_and_counts_everything() -> None:
    """Kept text stays under FOLD_CHARS; the total is the whole text's count, give or take."""
    counter = TokenCounter.for_model("gpt-4o-mini")
    tally = TextTally(counter)
    sentence = "Budgets hold while streams flow. "
    pieces = [sentence] * (3 * FOLD_CHARS // len(sentence))
    for piece in pieces:
        tally.add(piece)
        if tally.chars >= FOLD_CHARS:
            await tally.fold()
        assert tally.chars < FOLD_CHARS
    # A fold splits a space from the word after it: at most a token more per fold.
    exact = counter.count("".join(pieces))
    assert 0 <= await tally.total() - exact <= 3
    assert tally.chars == 0


# Purity ----------------------------------------------------------------------------------


def test_the_shared_module_imports_no_sdk() -> None:
    """Provider SDKs are touched only by cycleguard.openai and cycleguard.anthropic."""
    source = Path(__file__).parents[1] / "src" / "cycleguard" / "_llm.py"
    tree = ast.parse(source.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & {"openai", "anthropic", "httpx", "httpx2"}
