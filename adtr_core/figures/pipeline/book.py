"""The reproduction as a book: a static HTML site from ``docs/`` and the executed notebooks.

``python -m adtr_core.figures.pipeline.book`` (``make book``) gathers the README (the home page),
the pages of ``docs/``, the figures and tables of ``figures/`` and the executed notebooks
of ``figures/executed/`` into a source folder laid out as the repository is (so every
relative link of the pages holds), adds a page of every table, and builds it with MkDocs
and mkdocs-jupyter into ``build/book/``. The notebooks are rendered as they were
executed, outputs and figures inline; none is run again. Nothing uses the network: the
theme's web fonts are off, and search runs in the browser.

Example:
    >>> from adtr_core.figures.pipeline.book import build_book
    >>> site = build_book()  # doctest: +SKIP
    >>> (site / "index.html").is_file()  # doctest: +SKIP
    True

See Also:
    ``tests/test_book.py`` (the site in headless Chromium: every page, image and link).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from adtr_core import paths
from adtr_core.io import write_text

# The docs pages in reading order (the README's "Where to go next"), with their titles.
DOCS_PAGES = {
    "results.md": "Results",
    "fidelity.md": "Fidelity beyond bottle",
    "decisions.md": "Decisions and their evidence",
    "data.md": "Data and your own images",
    "cli.md": "Command line",
    "notebooks.md": "Notebooks and papermill",
    "profiles.md": "Profiles and settings",
    "performance.md": "Performance",
    "identical-mapping.md": "Identical mapping",
    "choices.md": "Choices where the paper is silent",
    "reliability.md": "Reliability rules",
    "architecture.md": "Architecture",
    "anomalib.md": "Use ADTR from anomalib",
}
TABLES_PAGE = "tables.md"
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


class BookError(RuntimeError):
    """The book cannot be built (a missing page or executed notebook, MkDocs missing)."""


def _linked_files(page: Path, root: Path) -> list[Path]:
    """Repository files a Markdown page links to by a relative path (images included)."""
    found = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file = (page.parent / target).resolve()
        if file.is_file() and file.is_relative_to(root.resolve()):
            found.append(file)
    return found


def _tables_page(figures: Path) -> str:
    """Every Markdown table of ``figures/`` under the name of its file."""
    parts = [
        "# Every table\n\n",
        "Each table as its notebook saved it (`figures/NN_slug*.md`, the same numbers as the\n"
        "`.csv` beside it), in notebook order.\n",
    ]
    for table in sorted(figures.glob("[0-9][0-9]_*.md")):
        parts.append(f"\n## {table.stem}\n\n{table.read_text().strip()}\n")
    return "".join(parts)


def stage(source: Path, root: Path | None = None, figures: Path | None = None) -> dict:
    """Lay out the book's sources in ``source`` (emptied first); return the MkDocs config.

    Args:
        source: the folder to fill (``build/book-src``).
        root: the repository (default :func:`adtr_core.paths.repo_root`).
        figures: the figures folder (default ``<root>/figures``).

    Returns:
        The MkDocs configuration (``nav`` lists every page), also written to
        ``source/mkdocs.yml``.

    Raises:
        BookError: a docs page or the executed notebooks are missing.
    """
    root = root or paths.repo_root()
    figures = figures or root / "figures"
    executed = sorted((figures / "executed").glob("[0-9][0-9]_*.ipynb"))
    executed = [nb for nb in executed if not nb.name.endswith(".FAILED.ipynb")]
    if not executed:
        raise BookError(f"no executed notebooks in {figures / 'executed'}: run `make figures`")
    missing = [p for p in DOCS_PAGES if not (root / "docs" / p).is_file()]
    if missing:
        raise BookError(f"docs pages missing: {', '.join(missing)}")
    if source.exists():
        shutil.rmtree(source)
    pages = source / "pages"
    pages.mkdir(parents=True)
    shutil.copy2(root / "README.md", pages / "index.md")
    (pages / "docs").mkdir()
    linked = set(_linked_files(root / "README.md", root))
    for name in DOCS_PAGES:
        shutil.copy2(root / "docs" / name, pages / "docs" / name)
        linked.update(_linked_files(root / "docs" / name, root))
    for file in linked:
        if file.suffix != ".md" or file.parent != (root / "docs").resolve():
            target = pages / file.relative_to(root.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
    book_figures = pages / "figures"
    book_figures.mkdir(exist_ok=True)
    for png in figures.glob("[0-9][0-9]_*.png"):
        shutil.copy2(png, book_figures / png.name)
    (book_figures / "executed").mkdir(exist_ok=True)
    for nb in executed:
        shutil.copy2(nb, book_figures / "executed" / nb.name)
    write_text(pages / TABLES_PAGE, _tables_page(figures))
    config = {
        "site_name": "adtr: a reproduction of ADTR",
        "docs_dir": "pages",
        "use_directory_urls": False,  # plain .html files: the site opens from disk too
        "theme": {"name": "material", "font": False},  # no web fonts: nothing from the network
        "plugins": [
            "search",
            {
                "mkdocs-jupyter": {
                    "execute": False,
                    "include": ["*.ipynb"],
                    "ignore_h1_titles": True,
                }
            },
        ],
        "markdown_extensions": ["tables", "toc", "attr_list"],
        "nav": [
            {"Home": "index.md"},
            *({title: f"docs/{name}"} for name, title in DOCS_PAGES.items()),
            {"Notebooks": [{nb.stem: f"figures/executed/{nb.name}"} for nb in executed]},
            {"Every table": TABLES_PAGE},
        ],
    }
    write_text(source / "mkdocs.yml", yaml.safe_dump(config, sort_keys=False))
    return config


def build_book(
    site: Path | None = None, root: Path | None = None, figures: Path | None = None
) -> Path:
    """Build the book into ``site`` (default ``<root>/build/book``); return ``site``.

    Raises:
        BookError: missing sources, MkDocs not installed, or MkDocs failed (its output).
    """
    root = root or paths.repo_root()
    site = site or root / "build" / "book"
    source = site.parent / f"{site.name}-src"
    stage(source, root, figures)
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
    cmd += ["-f", str(source / "mkdocs.yml"), "-d", str(site.resolve())]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as err:  # pragma: no cover - sys.executable always exists
        raise BookError(str(err)) from err
    if done.returncode != 0:
        if "No module named mkdocs" in done.stderr:
            raise BookError("MkDocs is not installed: `pip install -e '.[dev]'` installs it")
        raise BookError(f"mkdocs build failed:\n{done.stdout}{done.stderr}".rstrip())
    return site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adtr_core.figures.pipeline.book",
        description="Build the static HTML book from docs/ and figures/executed/.",
    )
    parser.add_argument("--out", type=Path, default=None, help="site folder (build/book)")
    args = parser.parse_args(argv)
    try:
        site = build_book(args.out)
    except BookError as err:
        print(f"adtr book: error: {err}", file=sys.stderr)
        return 2
    print(f"book: {site / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
