"""Client configuration, from code or from ``CYCLES_*`` environment variables."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, final

import attrs

from cycleguard._core._errors import UsageError
from cycleguard._core._http import Timeouts
from cycleguard._core._models import Subject

if TYPE_CHECKING:
    from collections.abc import Mapping


@final
@attrs.frozen(kw_only=True)
class ClientConfig:
    """Where the Cycles server is, how to authenticate, and defaults for every request.

    ``subject`` fills unset subject fields of every decide, reservation and event
    request, and the filters of balance queries. The API key never shows in a repr:

    >>> config = ClientConfig(base_url="http://127.0.0.1:7878", api_key="cyc_live_secret")
    >>> "cyc_live_secret" in repr(config)
    False
    """

    base_url: str
    api_key: str = attrs.field(repr=False)
    subject: Subject = Subject()
    timeouts: Timeouts = Timeouts()

    @classmethod
    def from_env(
        cls, prefix: str = "CYCLES_", environ: Mapping[str, str] | None = None
    ) -> ClientConfig:
        """Read ``{prefix}BASE_URL``, ``{prefix}API_KEY``, the six subject levels
        (``{prefix}TENANT`` … ``{prefix}TOOLSET``) and the timeouts
        ``{prefix}CONNECT_TIMEOUT`` / ``{prefix}READ_TIMEOUT`` (seconds).

        Raises :class:`~cycleguard.errors.UsageError` naming the variable that is
        missing or malformed.

        >>> ClientConfig.from_env(environ={"CYCLES_BASE_URL": "http://h", "CYCLES_API_KEY": "k",
        ...                                "CYCLES_TENANT": "acme"}).subject.tenant
        'acme'
        """
        env = os.environ if environ is None else environ

        def required(name: str) -> str:
            value = env.get(prefix + name, "").strip()
            if not value:
                raise UsageError(f"environment variable {prefix}{name} is not set")
            return value

        def seconds(name: str, default: float | None) -> float | None:
            raw = env.get(prefix + name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(
                    f"{prefix}{name} must be a number of seconds, got {raw!r}"
                ) from None
            if value <= 0:
                raise UsageError(f"{prefix}{name} must be positive, got {raw!r}")
            return value

        def level(name: str) -> str | None:
            return env.get(prefix + name, "").strip() or None

        defaults = Timeouts()
        return cls(
            base_url=required("BASE_URL"),
            api_key=required("API_KEY"),
            subject=Subject(
                tenant=level("TENANT"),
                workspace=level("WORKSPACE"),
                app=level("APP"),
                workflow=level("WORKFLOW"),
                agent=level("AGENT"),
                toolset=level("TOOLSET"),
            ),
            timeouts=Timeouts(
                connect=seconds("CONNECT_TIMEOUT", defaults.connect),
                read=seconds("READ_TIMEOUT", defaults.read),
                write=seconds("WRITE_TIMEOUT", defaults.write),
                pool=seconds("POOL_TIMEOUT", defaults.pool),
            ),
        )
