"""``cycleguard demo``: an agent loop under a budget, end to end, on one machine.

The demo starts the embedded Cycles server (SQLite in a temporary directory),
provisions a tenant, an API key, two budgets and a caps policy through the
real admin API, then runs an agent of guarded OpenAI calls (the real ``openai``
SDK, against the offline fake unless ``OPENAI_API_KEY`` is set) until the
agent's budget runs out, showing every decision as it happens.
"""

from __future__ import annotations

from cycleguard._demo._command import add_demo_command

__all__ = ("add_demo_command",)
