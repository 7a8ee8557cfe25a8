"""The book in a real browser: headless Chromium (Debian's, driven by Playwright) opens every
page of a book built from two notebooks executed here -- 00 (seaborn figures) and 16 (math,
a figure), the fast ones with both -- as `make run` executes them, and checks what a reader
would see. Screenshots of the landing page and of notebook 16 go to runs/book-screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from mfutils.book import build_book
from mfutils.series import NOTEBOOK_DIR, missing_figures, run_series

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "runs" / "book-screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the book test (.ci/run installs it)")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)
if not (Path(os.environ.get("MFUTILS_DATA_DIR", "")) / "ml-100k" / "u.data").is_file():
    pytest.skip("notebook 00 needs ML-100K in $MFUTILS_DATA_DIR", allow_module_level=True)


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    notebooks = [NOTEBOOK_DIR / "00_movielens.ipynb", NOTEBOOK_DIR / "16_bayesian_mf.ipynb"]
    assert run_series(notebooks=notebooks, output=run, parameters={"device": "cpu"}) == 0
    for path in notebooks:
        assert missing_figures(run / "notebooks" / path.name) == []
    return build_book(run)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _pages(book: Path) -> list[Path]:
    folder = book.parent
    return [book, *sorted((folder / "notebooks").glob("*.html")), folder / "results.html"]


def test_the_book_has_a_page_per_notebook_and_the_results(book):
    names = [page.name for page in _pages(book)]
    assert names == ["index.html", "00_movielens.html", "16_bayesian_mf.html", "results.html"]
    assert all(page.is_file() for page in _pages(book))


def test_every_page_renders_in_chromium(book, browser):
    problems = []
    for path in _pages(book):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on(
            "console",
            lambda message, e=errors: e.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error, e=errors: e.append(str(error)))
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_function(
            "() => !window.MathJax || (MathJax.startup && "
            "MathJax.startup.document && MathJax.startup.promise)"
        )
        page.evaluate("() => window.MathJax ? MathJax.startup.promise : null")
        name = path.name
        problems += [f"{name}: console error {text}" for text in errors]
        images = page.evaluate(
            "() => Array.from(document.images).map("
            "i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])"
        )
        problems += [f"{name}: image {src} did not load" for src, width in images if not width]
        text = page.inner_text("body")
        if "$$" in text or "\\frac" in text:
            problems.append(f"{name}: raw TeX left in the page")
        links = page.evaluate(
            "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
        )
        for link in links:
            url = urlparse(link)
            if url.scheme == "file" and not Path(unquote(url.path)).exists():
                problems.append(f"{name}: broken link {link}")
        if name == "16_bayesian_mf.html":
            assert page.locator("mjx-container").count() > 10  # the math is typeset
            assert len(images) >= 1
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "16_bayesian_mf.png", full_page=False)
        if name == "00_movielens.html":
            assert len(images) >= 4  # the seaborn figures of the data tour
            page.locator("img").nth(1).scroll_into_view_if_needed()
            page.screenshot(path=SCREENSHOTS / "00_movielens.png")
        if name == "index.html":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "index.png")
        page.close()
    assert not problems, "\n".join(problems)
