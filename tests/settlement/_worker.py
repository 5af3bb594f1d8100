"""A settlement worker process for the restart tests (run as a script, never imported by pytest).

Everything comes from the JSON configuration in ``argv[1]``: server URL, API key,
tenant, journal directory, event loop. Nothing else crosses the process boundary
(recovery profile rule T2). The client uses the default (h11) transport: real HTTP.

Modes:

``commit``
    Settle one known actual with :meth:`Settlement.commit`.
``replay``
    Build a fresh settlement and :meth:`Settlement.replay` the journal.

The last stdout line is a JSON summary: ``{"outcomes": {reservation_id: outcome_type}}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio

from cycleguard import Action, Amount, ClientConfig, CommitRequest, CyclesClient, Subject
from cycleguard._core._retry import Backoff
from cycleguard._journal import JournalConfig
from cycleguard._settlement import Settlement, SettlementPolicy

if TYPE_CHECKING:
    from cycleguard._settlement import SettlementOutcome

POLICY = SettlementPolicy(
    max_retries=5, backoff=Backoff(initial=0.05, max_delay=0.5), retry_budget=5.0
)


def _text(config: dict[str, object], name: str) -> str:
    value = config[name]
    assert isinstance(value, str), name
    return value


async def run(config: dict[str, object]) -> dict[str, str]:
    """Do the configured work; return each reservation's outcome type."""
    tenant = config.get("tenant")
    client = CyclesClient(
        ClientConfig(
            base_url=_text(config, "base_url"),
            api_key=_text(config, "api_key"),
            subject=Subject(tenant=tenant if isinstance(tenant, str) else None),
        )
    )
    outcomes: dict[str, SettlementOutcome] = {}
    async with client:
        settlement = Settlement(
            client,
            journal=JournalConfig(directory=Path(_text(config, "journal_dir"))),
            policy=POLICY,
        )
        if config["mode"] == "commit":
            rid = _text(config, "reservation_id")
            outcomes[rid] = await settlement.commit(
                reservation_id=rid,
                request=CommitRequest(
                    idempotency_key=_text(config, "key"),
                    actual=Amount.tokens(cast("int", config["actual"])),
                    metadata={"actual_source": "provider_usage"},
                ),
                subject=Subject(tenant=tenant if isinstance(tenant, str) else None),
                action=Action("llm.completion", "openai:gpt-4o-mini"),
            )
        else:
            report = await settlement.replay()
            outcomes.update(report.outcomes)
    return {rid: type(outcome).__name__ for rid, outcome in outcomes.items()}


def main() -> None:
    """Entry point: ``python _worker.py '<json config>'``."""
    config = cast("dict[str, object]", json.loads(sys.argv[1]))
    backend = _text(config, "backend")
    summary = anyio.run(run, config, backend=backend)
    print(json.dumps({"outcomes": summary}), flush=True)


if __name__ == "__main__":
    main()
