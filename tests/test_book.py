"""The book (``make book``): its sources are complete, and the built site works in a browser.

The staging tests are fast and run by default. The browser tests (marker ``browser``,
``make test-browser``) build the site from the committed docs and executed notebooks,
serve it on 127.0.0.1 and visit every page in headless Chromium (as ``test_browser.py``
does: Debian's Chromium through Playwright's ``executable_path``, skipped with a hint
without it): each page renders, every image loads, every internal link and anchor
resolves, and every built page is reachable from the home page.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_browser import CHROMIUM_FLAGS, _chromium

from adtr_core import paths
from adtr_core.figures.pipeline import book

ROOT = paths.repo_root()
FIGURES = ROOT / "figures"  # the committed figures (the tests' ADTR_FIGURES is a tmp folder)


def _nav_files(nav: list) -> list[str]:
    files = []
    for entry in nav:
        for value in entry.values():
            files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def test_the_book_holds_every_page_notebook_and_table(tmp_path):
    config = book.stage(tmp_path / "src", ROOT, FIGURES)
    pages = tmp_path / "src" / "pages"
    nav = _nav_files(config["nav"])
    assert (
        nav[0] == "index.md"
        and (pages / "index.md").read_text() == (ROOT / "README.md").read_text()
    )
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= set(nav)
    executed = {
        f"figures/executed/{p.name}" for p in (FIGURES / "executed").glob("[0-9][0-9]_*.ipynb")
    }
    assert executed and executed <= set(nav)
    assert all((pages / f).is_file() for f in nav)
    tables = (pages / book.TABLES_PAGE).read_text()
    for table in FIGURES.glob("[0-9][0-9]_*.md"):
        assert f"## {table.stem}\n" in tables
    assert (pages / "figures" / "04_score_maps_bottle.png").is_file()  # the README's figure
    assert (pages / "data" / "mvtec_ad" / "SOURCE.md").is_file()  # linked from the README
    assert yaml.safe_load((tmp_path / "src" / "mkdocs.yml").read_text())["theme"]["font"] is False


def test_the_book_needs_the_executed_notebooks(tmp_path):
    empty = tmp_path / "figures"
    (empty / "executed").mkdir(parents=True)
    with pytest.raises(book.BookError, match="no executed notebooks .* run `make figures`"):
        book.stage(tmp_path / "src", ROOT, empty)


def test_make_book_builds_it():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nbook: setup\n\t$(PY) -m adtr_core.figures.pipeline.book\n" in makefile


# --- in a browser -------------------------------------------------------------------------

CHECK_PAGE = """async () => {
    const imgs = Array.from(document.images);
    imgs.forEach(img => { img.loading = 'eager'; });
    await Promise.all(imgs.map(img => img.complete ? null :
        new Promise(done => { img.onload = img.onerror = done; })));
    const main = document.querySelector('.md-content');
    return {
        text: main ? main.innerText.trim().length : 0,
        broken: imgs.filter(img => !img.naturalWidth).map(img => img.src.slice(0, 120)),
        images: imgs.length,
        ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return book.build_book(tmp_path_factory.mktemp("book") / "site", ROOT, FIGURES)


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            pass  # the browser closing a connection early is no problem of the site

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no Playwright: `pip install playwright` (its browser download is not needed)")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def _crawl(browser, base: str, only: set[str] | None = None) -> tuple[dict[str, dict], list[str]]:
    """Visit the site from its home page; return what each page holds and every problem.

    With ``only``, just those pages are visited; links to other pages are only fetched.
    """
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    seen: dict[str, dict] = {}
    queue, problems, anchors = ["index.html"], [], []
    try:
        while queue:
            path = queue.pop(0)
            if path in seen:
                continue
            response = page.goto(base + path, wait_until="load")
            if response is None or not response.ok:
                problems.append(f"{path}: HTTP {response.status if response else 'none'}")
                seen[path] = {"ids": []}
                continue
            info = page.evaluate(CHECK_PAGE)
            seen[path] = info
            if info["text"] < 50:
                problems.append(f"{path}: the page shows no content")
            problems += [f"{path}: image does not load: {src}" for src in info["broken"]]
            for link in info["links"]:
                url = urllib.parse.urlsplit(link)
                if not link.startswith(base):
                    continue  # another site (none is needed to read this one)
                target = url.path[len(urllib.parse.urlsplit(base).path) :] or "index.html"
                if target.endswith("/"):
                    target += "index.html"
                if target.endswith(".html") and (only is None or target in only):
                    queue.append(target)
                    if url.fragment:
                        anchors.append((path, target, urllib.parse.unquote(url.fragment)))
                else:
                    try:
                        urllib.request.urlopen(base + target, timeout=10).close()
                    except urllib.error.URLError as err:
                        problems.append(f"{path}: broken link {target} ({err})")
    finally:
        page.close()
    for source, target, fragment in anchors:
        if target in seen and fragment not in seen[target]["ids"]:
            problems.append(f"{source}: broken anchor {target}#{fragment}")
    problems += [f"JavaScript error: {err}" for err in errors]
    return seen, problems


@pytest.mark.browser
def test_every_page_of_the_book_renders_with_its_images_and_links(browser, site):
    server, base = _serve(site)
    try:
        seen, problems = _crawl(browser, base)
    finally:
        server.shutdown()
    assert not problems, "\n".join(problems[:30])
    built = {p.relative_to(site).as_posix() for p in site.rglob("*.html")} - {"404.html"}
    assert built - set(seen) == set(), "pages no link reaches"
    notebooks = [p for p in seen if p.startswith("figures/executed/")]
    assert len(notebooks) == len(list((FIGURES / "executed").glob("[0-9][0-9]_*.ipynb")))
    assert all(seen[p]["images"] >= 1 for p in notebooks), "a notebook page without figures"
    assert seen["index.html"]["images"] >= 1


@pytest.mark.browser
def test_the_crawl_finds_a_missing_image_and_a_broken_link(browser, site, tmp_path):
    """The check above can fail: a copy of the site without the README's figure and a page."""
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    (broken / "figures" / "04_score_maps_bottle.png").unlink()
    (broken / "docs" / "architecture.html").unlink()
    server, base = _serve(broken)
    try:
        _, problems = _crawl(browser, base, only={"index.html"})
    finally:
        server.shutdown()
    assert any("image does not load" in p and "04_score_maps_bottle" in p for p in problems)
    assert any("broken link docs/architecture.html" in p for p in problems), problems
