"""Redraw the README's two pictures from the demo: docs/demo-grid.png and docs/explorer.png.

Runs `convis-jax demo` on the bundled model into a temporary folder, copies
scene-1's grid (its one shape and that shape's parent) and photographs the
demo's explorer page on scene-1 with that shape selected, 1280 x 800, in
Debian's Chromium through Playwright (no browser download; see
tests/test_explorer_browser.py).

Usage (from the repository root):
    python scripts/readme_pictures.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from convis_jax import cli

ROOT = Path(__file__).resolve().parents[1]
SCENE = "scene-1"
# Debian's Chromium, headless and quiet (tests/test_explorer_browser.py drives it too).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}


def draw(out: Path) -> tuple[Path, Path]:
    """Writes `out/demo-grid.png` and `out/explorer.png`; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    grid, explorer = out / "demo-grid.png", out / "explorer.png"
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp)
        cli.main(["demo", "--out", str(demo)])
        shutil.copyfile(demo / "maps" / SCENE / "grid.png", grid)
        shape = json.loads((demo / "maps" / f"{SCENE}.json").read_text())["concepts"][0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto((demo / "explorer" / "index.html").as_uri())
            page.select_option("select", label=SCENE)
            page.get_by_text(shape, exact=True).first.click()
            page.wait_for_timeout(500)  # the map redraws after the click
            page.screenshot(path=str(explorer))
            browser.close()
    return grid, explorer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder to write the pictures to")
    args = parser.parse_args(argv)
    for path in draw(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
