"""Token usage, offline token counting, pricing and estimates for LLM calls.

What the provider integrations are built from, usable on their own:

- :class:`TokenUsage` normalises the usage of OpenAI chat, Responses and
  embeddings calls and of Anthropic messages (cached, cache-write and
  reasoning tokens kept apart);
- :class:`TokenCounter` counts tokens offline, exactly as ``tiktoken`` does,
  and :func:`chat_prompt_tokens` and friends count a request's prompt;
- :class:`Pricing` turns usage into ``USD_MICROCENTS`` (integers, rounded up),
  with :class:`GenaiPrices` (the ``genai-prices`` table, offline) and
  :class:`PriceBook` (your own rates);
- :func:`estimate_amount` and :func:`usage_amount` give the amounts to reserve
  and to commit, in the budget's unit.

>>> from cycleguard import Unit
>>> counter = TokenCounter.for_model("gpt-4o-mini")
>>> params = {"model": "gpt-4o-mini", "max_completion_tokens": 200,
...           "messages": [{"role": "user", "content": "Say hi."}]}
>>> prompt = chat_prompt_tokens(counter, params)
>>> estimate_amount("gpt-4o-mini", prompt_tokens=prompt,
...                 max_output_tokens=output_ceiling(params, default=1_024), unit=Unit.TOKENS)
<Success: Amount(unit=<Unit.TOKENS: 'TOKENS'>, amount=210)>
>>> book = PriceBook({"gpt-4o-mini": Rates.per_million(input="0.15", output="0.60")})
>>> usage_amount("gpt-4o-mini", TokenUsage(input_tokens=11, output_tokens=3),
...              unit=Unit.USD_MICROCENTS, pricing=book)
<Success: Amount(unit=<Unit.USD_MICROCENTS: 'USD_MICROCENTS'>, amount=345)>
"""

from __future__ import annotations

from cycleguard.metering._estimate import OUTPUT_CEILING_KEYS as OUTPUT_CEILING_KEYS
from cycleguard.metering._estimate import MeteringError as MeteringError
from cycleguard.metering._estimate import UnsupportedUnit as UnsupportedUnit
from cycleguard.metering._estimate import estimate_amount as estimate_amount
from cycleguard.metering._estimate import output_ceiling as output_ceiling
from cycleguard.metering._estimate import usage_amount as usage_amount
from cycleguard.metering._genai_prices import GenaiPrices as GenaiPrices
from cycleguard.metering._pricing import MICROCENTS_PER_USD as MICROCENTS_PER_USD
from cycleguard.metering._pricing import PriceBook as PriceBook
from cycleguard.metering._pricing import Pricing as Pricing
from cycleguard.metering._pricing import PricingError as PricingError
from cycleguard.metering._pricing import PricingFailed as PricingFailed
from cycleguard.metering._pricing import Rates as Rates
from cycleguard.metering._pricing import UnknownModel as UnknownModel
from cycleguard.metering._pricing import usd_to_microcents as usd_to_microcents
from cycleguard.metering._prompt import IMAGE_TOKENS as IMAGE_TOKENS
from cycleguard.metering._prompt import REPLY_PRIMING_TOKENS as REPLY_PRIMING_TOKENS
from cycleguard.metering._prompt import TOKENS_PER_MESSAGE as TOKENS_PER_MESSAGE
from cycleguard.metering._prompt import TOKENS_PER_NAME as TOKENS_PER_NAME
from cycleguard.metering._prompt import TextCounter as TextCounter
from cycleguard.metering._prompt import anthropic_prompt_tokens as anthropic_prompt_tokens
from cycleguard.metering._prompt import chat_prompt_tokens as chat_prompt_tokens
from cycleguard.metering._prompt import count_chat_messages as count_chat_messages
from cycleguard.metering._prompt import embeddings_input_tokens as embeddings_input_tokens
from cycleguard.metering._prompt import responses_prompt_tokens as responses_prompt_tokens
from cycleguard.metering._tokens import Encoding as Encoding
from cycleguard.metering._tokens import TokenCounter as TokenCounter
from cycleguard.metering._tokens import encoding_for_model as encoding_for_model
from cycleguard.metering._usage import AnthropicOutputDetails as AnthropicOutputDetails
from cycleguard.metering._usage import AnthropicUsageLike as AnthropicUsageLike
from cycleguard.metering._usage import ChatUsageLike as ChatUsageLike
from cycleguard.metering._usage import CompletionDetailsLike as CompletionDetailsLike
from cycleguard.metering._usage import EmbeddingsUsageLike as EmbeddingsUsageLike
from cycleguard.metering._usage import PromptDetailsLike as PromptDetailsLike
from cycleguard.metering._usage import ResponsesUsageLike as ResponsesUsageLike
from cycleguard.metering._usage import TokenUsage as TokenUsage

__all__ = (
    # usage
    "TokenUsage",
    "ChatUsageLike",
    "ResponsesUsageLike",
    "EmbeddingsUsageLike",
    "AnthropicUsageLike",
    "PromptDetailsLike",
    "CompletionDetailsLike",
    "AnthropicOutputDetails",
    # token counting
    "Encoding",
    "TokenCounter",
    "encoding_for_model",
    "TextCounter",
    "count_chat_messages",
    "chat_prompt_tokens",
    "responses_prompt_tokens",
    "anthropic_prompt_tokens",
    "embeddings_input_tokens",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "REPLY_PRIMING_TOKENS",
    "IMAGE_TOKENS",
    # pricing
    "Pricing",
    "GenaiPrices",
    "PriceBook",
    "Rates",
    "PricingError",
    "UnknownModel",
    "PricingFailed",
    "usd_to_microcents",
    "MICROCENTS_PER_USD",
    # amounts
    "estimate_amount",
    "usage_amount",
    "output_ceiling",
    "OUTPUT_CEILING_KEYS",
    "MeteringError",
    "UnsupportedUnit",
)
