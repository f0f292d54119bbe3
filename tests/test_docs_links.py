"""Every relative link of README.md and docs/*.md reaches a file, and every ``#anchor`` a heading of it.

The README sent readers to ``docs/performance.md#garbage-collection``, a bold paragraph, not a heading:
GitHub opened the page at its top. Anchors are GitHub's: the heading in lower case, punctuation but
``-`` and ``_`` dropped, spaces as ``-``, a repeated heading's ``-1``, ``-2``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCED = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def _prose(doc: Path) -> str:
    return _FENCED.sub("", doc.read_text())  # a link-like text in a code block is no link


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives ``doc``'s headings."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_prose(doc)):
        slug = _slug(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def _links() -> list[tuple[Path, str]]:
    return [
        (doc, target)
        for doc in DOCS
        for target in _LINK.findall(_prose(doc))
        if not target.startswith(("http://", "https://", "mailto:"))
    ]


LINKS = _links()


def test_the_docs_link_to_each_other() -> None:
    """The rule below reaches what it should: links between pages, with anchors, and within a page."""
    assert len(LINKS) >= 100
    assert any(target.startswith("#") for _, target in LINKS)
    assert any("#" in target and not target.startswith("#") for _, target in LINKS)


@pytest.mark.parametrize(("doc", "target"), LINKS, ids=[f"{doc.relative_to(ROOT)}->{target}" for doc, target in LINKS])
def test_a_relative_link_reaches_its_file_and_heading(doc: Path, target: str) -> None:
    """The file exists; an anchor on a Markdown page is one of its headings'."""
    name, _, anchor = target.partition("#")
    linked = (doc.parent / name).resolve() if name else doc
    assert linked.exists(), f"{doc.relative_to(ROOT)}: {target}: no such file"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{doc.relative_to(ROOT)}: {target}: no such heading"
