"""The atlas page in Debian's Chromium (Playwright), offline: search a concept, its top
images in the atlas's order with their maps, and a click into the concept explorer.

Uses the browser fixture and offline page of tests/test_explorer_browser.py (no
browser download; fails, not skips, without Chromium or Playwright).
"""

import numpy as np
from test_explorer_browser import ARTIFACTS, OfflinePage, browser  # noqa: F401 (fixture)


def test_atlas_page_from_the_bundled_model(browser, tmp_path):  # noqa: F811
    from PIL import Image

    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.cli import main
    from convis_jax.scenes import render_scene

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(render_scene(20 + i, size=224, n_objects=(1, 2)).image).save(
            photos / f"scene-{i}.png")
    build_atlas(photos, tmp_path / "atlas", batch=5, progress=False)
    assert main(["atlas", "explore", str(tmp_path / "atlas"), "--out", str(tmp_path / "page"),
                 "--k", "3", "--quiet"]) == 0
    atlas = Atlas.open(tmp_path / "atlas", progress=False)
    view = OfflinePage(browser, (tmp_path / "page" / "index.html").as_uri())
    page = view.page
    try:
        concept = "circle.n.01"
        page.fill("#search", "circle")
        page.locator(f"#search-results .hit[data-k='{atlas.vocabulary.index(concept)}']").click()
        page.wait_for_function(f"location.hash === '#concept={concept}'")
        page.wait_for_selector("#gallery .tile")
        assert concept in page.inner_text("#concept-card")
        shown = page.eval_on_selector_all(
            "#gallery .tile", "tiles => tiles.map(t => t.querySelector('img').alt)")
        top = atlas.top_images(concept, 3)
        assert tuple(shown) == top.image_ids
        scores = page.eval_on_selector_all("#gallery .score", "s => s.map(e => Number(e.textContent))")
        np.testing.assert_allclose(scores, top.scores, atol=5e-4)
        # Each tile's white layer has opacity 1 - m, m the concept's map on that image.
        for j, image_id in enumerate(top.image_ids):
            alpha = np.array(page.evaluate(
                """(j) => { const c = document.querySelectorAll('#gallery canvas')[j];
                            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                            return Array.from(d).filter((_, i) => i % 4 === 3); }""", j))
            cells = atlas.cells(image_id, concept)[0, 0]
            np.testing.assert_allclose(alpha.reshape(cells.shape), 255 - np.rint(255 * cells),
                                       atol=1)
            assert cells.std() > 0.01
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "atlas.png"), full_page=True)
        # A tile opens the image's concept explorer on the same concept.
        page.locator("#gallery .tile").first.click()
        page.wait_for_selector("body[data-ready='true']")
        assert "explorer/index.html" in page.url
        assert page.inner_text("#concept-card .synset") == concept
        assert page.eval_on_selector("#image-select", "s => s.options[s.selectedIndex].text") \
            == top.image_ids[0]
        assert view.errors == [] and view.network == view.aborted == []
    finally:
        view.close()
