"""HTTP transports: the :class:`Transport` protocol and its implementations.

Optional backends live in their own modules so that importing this package
pulls in no optional dependency: ``cycleguard.transports.httpx``,
``cycleguard.transports.httpx2``, ``cycleguard.transports.aiohttp``.
"""

from __future__ import annotations

from cycleguard._core._http import Headers as Headers
from cycleguard._core._http import HttpRequest as HttpRequest
from cycleguard._core._http import HttpResponse as HttpResponse
from cycleguard._core._http import Timeouts as Timeouts
from cycleguard.transports._protocol import Transport as Transport

__all__ = ("Headers", "HttpRequest", "HttpResponse", "Timeouts", "Transport")
