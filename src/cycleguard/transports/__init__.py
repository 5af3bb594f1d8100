"""HTTP transports: the :class:`Transport` protocol and its implementations.

Each implementation lives in its own module so that importing this package
pulls in no optional dependency:

- ``cycleguard.transports.h11``: the default, a keep-alive pool on ``h11`` and anyio;
- ``cycleguard.transports.httpx`` / ``cycleguard.transports.httpx2``: on those clients
  (proxies, HTTP/2, a client you already configured);
- ``cycleguard.transports.aiohttp``: asyncio only;
- ``cycleguard.transports.asgi``: an ASGI app in process, no socket;
- ``cycleguard.transports.mock``: a handler function, for tests.
"""

from __future__ import annotations

from cycleguard._core._http import Headers as Headers
from cycleguard._core._http import HttpRequest as HttpRequest
from cycleguard._core._http import HttpResponse as HttpResponse
from cycleguard._core._http import Timeouts as Timeouts
from cycleguard.transports._protocol import Transport as Transport

__all__ = ("Headers", "HttpRequest", "HttpResponse", "Timeouts", "Transport")
