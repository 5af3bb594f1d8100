"""Configuration from the environment, and the API key's secrecy."""

from __future__ import annotations

import logging

import pytest

from cycleguard import ClientConfig, Subject, Timeouts
from cycleguard.errors import UsageError

BASE = {"CYCLES_BASE_URL": "http://127.0.0.1:7878", "CYCLES_API_KEY": "cyc_live_s3cret"}


def test_reads_every_variable() -> None:
    """Base URL, key, the six subject levels and the timeouts come from CYCLES_*."""
    env = {
        **BASE,
        "CYCLES_TENANT": "acme",
        "CYCLES_WORKSPACE": "prod",
        "CYCLES_APP": "bot",
        "CYCLES_WORKFLOW": "wf",
        "CYCLES_AGENT": "ag",
        "CYCLES_TOOLSET": "ts",
        "CYCLES_CONNECT_TIMEOUT": "1.5",
        "CYCLES_READ_TIMEOUT": "9",
    }
    config = ClientConfig.from_env(environ=env)
    assert config.base_url == "http://127.0.0.1:7878"
    assert config.api_key == "cyc_live_s3cret"
    assert config.subject == Subject(
        tenant="acme", workspace="prod", app="bot", workflow="wf", agent="ag", toolset="ts"
    )
    assert config.timeouts == Timeouts(connect=1.5, read=9.0)


def test_custom_prefix() -> None:
    """Another prefix reads another set of variables."""
    config = ClientConfig.from_env(
        "BILLING_", {"BILLING_BASE_URL": "http://b", "BILLING_API_KEY": "k"}
    )
    assert config.base_url == "http://b"


@pytest.mark.parametrize("missing", ["CYCLES_BASE_URL", "CYCLES_API_KEY"])
def test_missing_required_variable_is_named(missing: str) -> None:
    """A missing base URL or key is a UsageError naming the variable."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(UsageError, match=missing):
        ClientConfig.from_env(environ=env)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_timeout_is_named(value: str) -> None:
    """A malformed timeout says which variable and what it got."""
    with pytest.raises(UsageError, match="CYCLES_READ_TIMEOUT"):
        ClientConfig.from_env(environ={**BASE, "CYCLES_READ_TIMEOUT": value})


def test_api_key_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The key does not show in the config's repr, str, or a log line that formats it."""
    config = ClientConfig.from_env(environ=BASE)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("cycleguard").debug("config %r / %s", config, config)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config)
    assert "s3cret" not in caplog.text
