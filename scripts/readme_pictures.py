"""Redraw the README's pictures: docs/demo-grid.png, docs/explorer.png and docs/atlas.png.

Runs `convis-jax demo` on the bundled model into a temporary folder, copies
scene-0's grid (its one shape and that shape's parent) and photographs the
demo's explorer page on scene-0 with that shape selected, 1280 x 800, in
Debian's Chromium through Playwright (no browser download; see
tests/pictures/test_explorer_browser.py). Then builds an atlas of twelve scenes
(`convis-jax atlas build`), writes its page (`convis-jax atlas explore`)
and photographs it with `ATLAS_CONCEPT` searched.

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
SCENE = "scene-0"
# Debian's Chromium, headless and quiet (tests/pictures/test_explorer_browser.py drives it too).
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
ATLAS_CONCEPT = "circle.n.01"


def draw(out: Path) -> tuple[Path, Path, Path]:
    """Writes `out/demo-grid.png`, `out/explorer.png` and `out/atlas.png`; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    grid, explorer, atlas = out / "demo-grid.png", out / "explorer.png", out / "atlas.png"
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
            _atlas_page(demo / "atlas")
            page.goto((demo / "atlas" / "page" / "index.html").as_uri())
            page.wait_for_selector("body[data-ready='true']")
            page.fill("#search", ATLAS_CONCEPT)
            page.keyboard.press("Enter")
            page.wait_for_function(f"location.hash === '#concept={ATLAS_CONCEPT}'")
            page.wait_for_timeout(500)
            page.screenshot(path=str(atlas))
            browser.close()
    return grid, explorer, atlas


def _atlas_page(folder: Path) -> None:
    """Twelve scenes, their atlas and its page, under `folder`."""
    from convis_jax.pictures.overlays import save_png
    from convis_jax.scenes import make_dataset

    for i, scene in enumerate(make_dataset(seed=7, n=12, size=224)):
        save_png(scene.image, folder / "photos" / f"scene-{i:02d}.png")
    for command in (["atlas", "build", str(folder / "photos"), "--out", str(folder / "atlas")],
                    ["atlas", "explore", str(folder / "atlas"), "--out", str(folder / "page"),
                     "--k", "4"]):
        if cli.main(command + ["--quiet"]) != 0:
            raise RuntimeError(f"convis-jax {' '.join(command)} failed")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder to write the pictures to")
    args = parser.parse_args(argv)
    for path in draw(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
