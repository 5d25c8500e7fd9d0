"""The docs site: its examples run, its API reference is the public surface, it builds offline,
and a browser finds its way through it.

The notebook pages (the tutorials and docs/method.md) are executed by the
build itself (`scripts/build_docs.sh`, warnings as errors); the Python blocks
of every other page run here, page by page, in a fresh folder. The built
site is the one `scripts/build_docs.sh` writes to docs/_build/html: the
`site` fixture runs that script (an incremental build, quick when .ci/run
has just built it) and fails when the build fails.

The browser tests drive Debian's Chromium through Playwright (no browser is
downloaded), offline, with every request that would leave the machine
aborted and recorded.
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import convis_jax
from scripts.readme_pictures import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"


def _pages() -> list[Path]:
    skip = {"_build", "_autosummary", "_templates"}
    return sorted(p for p in DOCS.rglob("*.md") if not skip & set(p.relative_to(DOCS).parts))


def _is_notebook(page: Path) -> bool:
    """A MyST notebook: front matter naming a kernel (the build executes it)."""
    text = page.read_text()
    return text.startswith("---\n") and "kernelspec:" in text.split("\n---\n", 1)[0]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


PAGES = [p for p in _pages() if not _is_notebook(p)]
NOTEBOOKS = [p for p in _pages() if _is_notebook(p)]
EXAMPLE_PAGES = [p for p in PAGES if _python_blocks(p.read_text())]


def test_the_docs_have_examples_and_notebooks():
    names = {p.relative_to(DOCS).as_posix() for p in NOTEBOOKS}
    assert {"method.md", "tutorials/explain_an_image.md", "tutorials/ask_a_collection.md"} <= names
    assert len(EXAMPLE_PAGES) >= 6, [p.name for p in EXAMPLE_PAGES]


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    """Every Python block of the page, in order, in one namespace, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(_python_blocks(page.read_text()), 1):
        exec(compile(block, f"{page.relative_to(ROOT)} (block {number})", "exec"), namespace)


def _api_entries() -> dict[str, set[str]]:
    """Names listed by the API page's autosummary blocks, by their current module."""
    entries: dict[str, set[str]] = {}
    module = None
    for line in (DOCS / "api.md").read_text().splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = m.group(1)
        elif module and (m := re.match(r"   ([A-Za-z_]\w*)$", line)):
            entries.setdefault(module, set()).add(m.group(1))
    return entries


def test_api_reference_is_the_public_surface():
    entries = _api_entries()
    assert entries["convis_jax"] == set(convis_jax.__all__), (
        "docs/api.md must list exactly convis_jax.__all__: missing "
        f"{sorted(set(convis_jax.__all__) - entries['convis_jax'])}, extra "
        f"{sorted(entries['convis_jax'] - set(convis_jax.__all__))}")
    import importlib

    for module, names in entries.items():
        loaded = importlib.import_module(module)
        assert all(hasattr(loaded, n) for n in names), (module, names)


def test_version_has_one_source_and_the_changelog_names_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "convis_jax.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", convis_jax.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## (\d+\.\d+\.\d+)\b", changelog, flags=re.M)
    assert versions and versions[0] == convis_jax.__version__, (
        f"CHANGELOG.md's newest version is {versions[:1]}, convis_jax.__version__ is "
        f"{convis_jax.__version__}: bump them together")
    assert (ROOT / "convis_jax" / "py.typed").is_file()


def test_files_refer_only_to_this_repository():
    """The package, docs, scripts, benchmarks and tests name no file outside the repository;
    the method is docs/method.md (its sections are what docstrings point to)."""
    outside = ["METHOD" + ".md", "../" + "shared", "shared/" + "docs", "shared/" + "data"]
    found = []
    for folder in ("convis_jax", "docs", "scripts", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".md", ".txt", ".json", ".sh", ".html", ".js") or \
                    {"_build", "_autosummary"} & set(path.parts):
                continue
            text = path.read_text(errors="replace")
            found += [f"{path.relative_to(ROOT)}: {s}" for s in outside if s in text]
    assert not found, found
    method = (DOCS / "method.md").read_text()
    for number in range(1, 7):
        assert re.search(rf"^## {number}\. ", method, flags=re.M), f"docs/method.md lost section {number}"


# ---------------------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def site() -> Path:
    """docs/_build/html, brought up to date by the one documented build command."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build_docs.sh")], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"scripts/build_docs.sh failed (exit {done.returncode}; the docs need "
                    f'pip install -e ".[docs]"):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}',
                    pytrace=False)
    return SITE


REMOTE_ASSET = [
    re.compile(r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?"
               r"\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I),
    re.compile(r"url\(\s*[\"']?(?:https?:)?//", re.I),
    re.compile(r"@import\s+(?:url\()?\s*[\"']?(?:https?:)?//", re.I),
]


def test_the_built_site_loads_nothing_from_the_network(site):
    files = [p for p in site.rglob("*") if p.suffix in (".html", ".css")]
    assert len(files) > 20
    found = [f"{p.relative_to(site)}: {m.group(0)[:120]}" for p in files
             for pattern in REMOTE_ASSET for m in pattern.finditer(p.read_text(errors="replace"))]
    assert not found, found


def test_every_public_name_has_a_reference_page(site):
    for name in convis_jax.__all__:
        page = site / "_autosummary" / f"convis_jax.{name}.html"
        assert page.is_file(), page
        assert f'id="convis_jax.{name}"' in page.read_text(), page


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the docs browser test needs Playwright: pip install playwright "
                    "(no `playwright install`)", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"the docs browser test needs Debian's Chromium at {CHROMIUM}: "
                    "apt-get install -y chromium", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(site):
    """The built site served on 127.0.0.1 (as a docs host serves it: the search fetches pages)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page(browser, server):
    """A browser tab that may load the site and nothing else; `page.left` lists the requests
    that would have left the machine (aborted), `page.errors` the page's errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    left, errors = [], []

    def route(r):
        if r.request.url.startswith((server, "data:", "blob:")):
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.left, tab.errors, tab.site = left, errors, server
    yield tab
    context.close()


def test_home_to_api_reference_to_occlusion_maps_by_search(site, page):
    page.goto(page.site + "index.html")
    page.locator("article").get_by_role("link", name="API reference").first.click()
    page.wait_for_load_state()
    assert page.url.endswith("/api.html"), page.url
    assert page.locator("article").get_by_role("link", name="ConVis", exact=True).count() >= 1

    # The site's search box (the theme's, in the sidebar) submits to search.html.
    box = page.locator("form.bd-search input[name='q']").first
    if not box.is_visible():
        page.keyboard.press("Control+k")  # the theme's shortcut opens the search dialog
        box = page.locator("input[name='q']:visible").first
    box.fill("occlusion_maps")
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q=occlusion_maps"))
    hit = page.locator("#search-results a", has_text="occlusion_maps").first
    hit.wait_for(timeout=30_000)
    hit.click()
    page.wait_for_load_state()
    assert "convis_jax.ConVis" in page.url, page.url
    entry = page.locator('[id="convis_jax.ConVis.occlusion_maps"]')
    assert entry.count() == 1
    assert "[N, K, 224, 224]" in entry.locator("xpath=..").inner_text()
    assert not page.left, page.left
    assert not page.errors, page.errors


@pytest.mark.parametrize("name", ["tutorials/explain_an_image.html", "tutorials/ask_a_collection.html",
                                  "method.html"])
def test_executed_pages_show_their_pictures(site, page, name):
    """The notebook pages carry the pictures their cells drew at build time, and they load."""
    page.goto(page.site + name)
    drawn = page.evaluate("""() => [...document.querySelectorAll("div.cell_output img")]
        .map((img) => [img.getAttribute("src"), img.complete && img.naturalWidth > 0])""")
    assert len(drawn) >= 2, drawn
    assert all(src.startswith("../_images/") or src.startswith("_images/") for src, _ in drawn), drawn
    assert all(loaded for _, loaded in drawn), drawn
    assert not page.locator("div.cell_output .output.traceback, div.cell_output .error").count()
    assert not page.left, page.left
    assert not page.errors, page.errors


def test_build_command_is_documented_and_run_in_ci():
    command = "scripts/build_docs.sh"
    assert command in (DOCS / "contributing.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / command).read_text()
    assert "-W" in script.split("sphinx", 1)[1], "the docs build must treat warnings as errors"
