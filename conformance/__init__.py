"""Conformance runners for cross-SDK profiles (see ``recovery.py``)."""

from __future__ import annotations
