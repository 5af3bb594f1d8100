"""``cycleguard serve`` in a child process, for tests that need one (signals, kill -9)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Sequence

_SERVING = re.compile(r"serving .* on (http://[0-9.]+:[0-9]+)")


@final
class ServerProcess:
    """A running ``python -m cycleguard serve`` with its output collected."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cycleguard", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.base_url = ""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._pumps = (
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        )
        for pump in self._pumps:
            pump.start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line.rstrip("\n"))
            match = _SERVING.search(line)
            if match:
                self.base_url = match.group(1)
                self._ready.set()
        self._ready.set()

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 20) -> str:
        """The base URL once the server prints it; fails if it exits first."""
        assert self._ready.wait(timeout), f"server did not start: {self.stderr}"
        assert self.base_url, f"server exited: {self.stdout} {self.stderr}"
        return self.base_url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        self.process.kill()
        self.process.wait(20)
        self._close()

    def _close(self) -> None:
        for pump in self._pumps:
            pump.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
