"""The README is a front page and ``docs/`` holds the rest: short, linked, nothing lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adtr_core import paths

ROOT = paths.repo_root()
DOCS = ROOT / "docs"
# The README's sections before it became a front page, and the page each one moved to.
MOVED_SECTIONS = {
    "The figures": "results.md",
    "What the quick profile found": "results.md",
    "Each figure": "results.md",
    "Install by hand, JupyterLab, papermill": "notebooks.md",
    "Command line": "cli.md",
    "Data": "data.md",
    "Backbones and weights": "profiles.md",
    "Profiles": "profiles.md",
    'The "identical mapping" analysis (Sec. 3.2)': "identical-mapping.md",
    "Performance": "performance.md",
    "Choices where the paper is silent": "choices.md",
    "Layout": "architecture.md",
}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _headings(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[\s-]+", "-", text)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_one_screen_of_essentials():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 10_000, f"README.md has {len(text)} characters (at most 10,000)"
    head = "\n".join(text.splitlines()[:40])
    assert "make figures" in head and "make test" in head
    assert re.search(r"!\[[^\]]*\]\(figures/[^)]+\.png\)", text), "the README shows a figure"
    table = [ln for ln in text.splitlines() if ln.startswith("| image AUROC, bottle")]
    assert table and "PatchCore" in text and "paper" in table[0] + text, "the results table"


@pytest.mark.parametrize("heading, page", MOVED_SECTIONS.items())
def test_every_moved_readme_section_is_a_heading_of_its_docs_page(heading, page):
    headings = _headings((DOCS / page).read_text())
    assert any(heading.lower() in h.lower() for h in headings), f"{heading!r} not in {page}"


def test_the_readme_links_every_docs_page():
    linked = {Path(m) for m in LINK.findall((ROOT / "README.md").read_text())}
    missing = [p.name for p in DOCS.glob("*.md") if Path("docs") / p.name not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            if anchor not in {_slug(h) for h in _headings(file.read_text())}:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_results_live_in_one_docs_page():
    """Numbers are regenerated in one place: docs/results.md (and the README's one table)."""
    results = (DOCS / "results.md").read_text()
    assert "What the quick profile found" in results
    for page in DOCS.glob("*.md"):
        if page.name != "results.md":
            assert "| image AUROC, bottle" not in page.read_text(), page.name
