"""Putting a test's own modules on ``sys.path``."""

from __future__ import annotations

import importlib
import sys

import pytest

__all__ = ["prepend_sys_path"]


def prepend_sys_path(monkeypatch: pytest.MonkeyPatch, directory: str) -> None:
    """``monkeypatch.syspath_prepend`` without its pkg_resources hook: kosoku (the conformance tests'
    fuzzer) leaves a pkg_resources shim in sys.modules that lacks the function that hook calls."""
    monkeypatch.setattr(sys, "path", [directory, *sys.path])
    importlib.invalidate_caches()
