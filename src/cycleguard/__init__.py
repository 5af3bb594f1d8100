"""cycleguard: a typed budget guard for LLM calls."""

from __future__ import annotations
