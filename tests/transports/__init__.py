"""Transport tests: the conformance suite and transport-specific tests."""

from __future__ import annotations
