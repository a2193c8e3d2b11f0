"""The documentation site as a reader sees it: built with `mkdocs build --strict`, served on 127.0.0.1 and opened in
headless Chromium (Playwright driving the system's `chromium`). Pages render without console errors, internal links
resolve, code is highlighted, search works, and the API reference shows constructors with their arguments.
Screenshots of three pages are written to build/screenshots/ for a person to look at."""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / 'build' / 'screenshots'
PAGES = {'index': '', 'guide': 'transforms/', 'api': 'api/nn/'}


def _browser() -> str:
    """Path of the Chromium to drive, or a skip naming what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip('Playwright for Python is not installed (pip install playwright; the test extras have it)')
    path = shutil.which('chromium') or shutil.which('chromium-browser')
    if path is None:
        pytest.skip('no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)')
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """(base URL, built site directory) of the documentation, served by a thread until the module ends."""
    chromium = _browser()
    out = tmp_path_factory.mktemp('site')
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    proc = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-q', '-f', str(ROOT / 'mkdocs.yml'),
                           '-d', str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}/', out, chromium
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def browser(site):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=site[2], args=['--no-sandbox'])
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    """A page at `url` with the console errors and uncaught exceptions it produced."""
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    errors = []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
    page.goto(url, wait_until='networkidle')
    return page, errors


@pytest.mark.parametrize('name', sorted(PAGES))
def test_page_renders_without_errors_and_its_links_resolve(site, browser, name):
    base, _, _ = site
    page, errors = _open(browser, base + PAGES[name])
    assert page.title() and page.locator('article h1').count() >= 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f'{name}.png'))
    links = {urllib.parse.urldefrag(h)[0] for h in page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)')}
    broken = []
    for link in sorted(links):
        if not link.startswith(base):
            continue
        try:
            with urllib.request.urlopen(link, timeout=10) as response:
                if response.status != 200:
                    broken.append(f'{link} ({response.status})')
        except urllib.error.HTTPError as e:
            broken.append(f'{link} ({e.code})')
    assert not broken, f'broken internal links on {PAGES[name] or "index"}: {broken}'
    assert not errors, f'console errors on {PAGES[name] or "index"}: {errors}'
    page.close()


def test_code_blocks_are_highlighted(site, browser):
    page, errors = _open(browser, site[0] + PAGES['guide'])
    blocks = page.locator('div.highlight pre code')
    assert blocks.count() > 3
    # Pygments wraps keywords, names and strings in classed spans; plain text would have none.
    assert page.locator('div.highlight pre code span.kn, div.highlight pre code span.k').count() > 0
    color = page.eval_on_selector('div.highlight pre code span.k, div.highlight pre code span.kn',
                                  'e => getComputedStyle(e).color')
    plain = page.eval_on_selector('article p', 'e => getComputedStyle(e).color')
    assert color != plain, 'keywords are not coloured'
    assert not errors
    page.close()


def test_search_finds_varcollection(site, browser):
    page, errors = _open(browser, site[0] + '?q=VarCollection')
    page.wait_for_selector('.md-search-result__item', timeout=20000)
    results = page.locator('.md-search-result__item').all_inner_texts()
    assert results and any('VarCollection' in r for r in results)
    assert not errors
    page.close()


def test_linear_shows_its_constructor_arguments(site, browser):
    page, errors = _open(browser, site[0] + PAGES['api'])
    section = page.locator('div.doc-class', has=page.locator('[id="objax.nn.Linear"]'))
    text = re.sub(r'\s+', ' ', section.first.inner_text())
    assert re.search(r'Linear\s*\(\s*nin: int, nout: int, use_bias: bool = True', text), text[:500]
    for argument, description in (('nin', 'number of input features'), ('nout', 'number of output features'),
                                  ('use_bias', 'whether to create and add the bias'), ('w_init', 'called with')):
        assert re.search(rf'{argument}\b.*{description}', text), f'{argument}: {description!r} not shown'
    assert not errors
    page.close()
