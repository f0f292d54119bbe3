"""Headless Chromium for the browser tests: check pages, the DOM they leave, the skip rule."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "check_page", "dump_dom", "needs_chromium", "page_report"]


def _find_chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = _find_chromium()
# CI installs chromium (make test): there a missing browser is a failure, not a reason to skip.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not found (apt-get install -y chromium)"
)

HOLD_JS = """
// Virtual time races ahead while only a WebSocket is busy, and --dump-dom fires once the budget is
// spent; a pending fetch pauses virtual time, so keep one in flight until done() (at most `rounds`
// fetches: ~10 s at the 50 ms a wait takes by default).
async function holdUntil(done, rounds = 200) {
  for (let i = 0; i < rounds && !done(); i++) await fetch("/browser-check/wait");
}
"""


def check_page(title: str, body: str, script: str) -> str:
    """A page that runs ``script`` (with ``holdUntil``) and reports into ``<pre id="report">``."""
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f'<body><pre id="report">not started</pre>\n{body}\n'
        f'<script>\n"use strict";{HOLD_JS}{script}</script></body></html>\n'
    )


def dump_dom(url: str, budget_ms: int = 5000, extra_args: Sequence[str] = ()) -> str:
    """Load ``url`` in headless Chromium and return its DOM once the virtual-time budget is spent.

    Virtual time stands still while a fetch is pending, so a page holds the dump back with ``holdUntil``.
    """
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *extra_args,
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=30 + 2 * budget_ms / 1000,  # virtual time may run slower than real time on a busy machine
            check=False,
        )
    assert result.returncode == 0, f"chromium exited with {result.returncode}:\n{result.stderr[-2000:]}"
    return result.stdout


def page_report(dom: str) -> dict[str, Any]:
    """The JSON the check page wrote into ``<pre id="report">``."""
    match = re.search(r'<pre id="report">(.*?)</pre>', dom, re.S)
    assert match is not None, f"no report in the dumped DOM:\n{dom[:2000]}"
    report: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return report
