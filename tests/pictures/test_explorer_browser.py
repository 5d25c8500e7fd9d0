"""The concept explorer in a real browser: Debian's Chromium driven by Playwright.

No browser is downloaded: Playwright drives /usr/bin/chromium. These tests
fail, not skip, when either is missing; install them with
`apt-get install -y chromium` and `pip install playwright` (never
`playwright install`).

The page is opened from file:// with the browser offline and every network
request aborted and recorded; the tests check that none was made, that no
console error was logged, and that the drawn pixels follow the overlay
formulas (white blend: image * m**gamma + 255 * (1 - m**gamma); heat map:
0.45 * image + 0.55 * turbo(m**gamma), turbo from matplotlib).
"""

from pathlib import Path

import numpy as np
import pytest

from convis_jax.pictures.explorer import (
    ExplorerImage,
    ExplorerVocabulary,
    write_explorer,
)
from scripts.readme_pictures import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# A slice of WordNet 3.0 noun hypernymy: apple.n.01 has two parents
# (edible_fruit.n.01, pome.n.01), and so do dog.n.01 and edible_fruit.n.01.
EDGES = [
    ("entity.n.01", "physical_entity.n.01"),
    ("physical_entity.n.01", "object.n.01"),
    ("physical_entity.n.01", "matter.n.03"),
    ("object.n.01", "whole.n.02"),
    ("whole.n.02", "living_thing.n.01"),
    ("whole.n.02", "artifact.n.01"),
    ("whole.n.02", "natural_object.n.01"),
    ("living_thing.n.01", "organism.n.01"),
    ("organism.n.01", "animal.n.01"),
    ("animal.n.01", "carnivore.n.01"),
    ("animal.n.01", "domestic_animal.n.01"),
    ("animal.n.01", "bird.n.01"),
    ("carnivore.n.01", "canine.n.02"),
    ("carnivore.n.01", "feline.n.01"),
    ("canine.n.02", "dog.n.01"),
    ("canine.n.02", "wolf.n.01"),
    ("domestic_animal.n.01", "dog.n.01"),
    ("feline.n.01", "cat.n.01"),
    ("bird.n.01", "parrot.n.01"),
    ("artifact.n.01", "container.n.01"),
    ("artifact.n.01", "game_equipment.n.01"),
    ("container.n.01", "box.n.01"),
    ("container.n.01", "bag.n.01"),
    ("game_equipment.n.01", "ball.n.01"),
    ("natural_object.n.01", "plant_part.n.01"),
    ("plant_part.n.01", "plant_organ.n.01"),
    ("plant_organ.n.01", "reproductive_structure.n.01"),
    ("reproductive_structure.n.01", "fruit.n.01"),
    ("fruit.n.01", "edible_fruit.n.01"),
    ("fruit.n.01", "pome.n.01"),
    ("edible_fruit.n.01", "apple.n.01"),
    ("pome.n.01", "apple.n.01"),
    ("matter.n.03", "solid.n.01"),
    ("solid.n.01", "food.n.02"),
    ("food.n.02", "produce.n.01"),
    ("produce.n.01", "edible_fruit.n.01"),
    ("produce.n.01", "vegetable.n.01"),
    ("vegetable.n.01", "tomato.n.01"),
]
TARGET = "apple.n.01"  # the concept whose map is high on the red square
DECOY = "box.n.01"  # ranked first by the flat score, so it is shown on opening

# Geometry of the synthetic image: 224 pixels, 14 x 14 cells of 16 pixels,
# a red square over cells 5..8 and a ring of cells around it where the
# target's map is 0.5.
IMAGE_SIZE, CELLS = 224, 14
GREY, RED = (128, 128, 128), (200, 30, 30)
VIEW = 448  # the page's main canvas, in pixels (device scale factor 1)


def _names():
    names = []
    for edge in EDGES:
        names += [name for name in edge if name not in names]
    return names


def _vocabulary(names):
    return ExplorerVocabulary(
        names=tuple(names),
        definitions=tuple(f"gloss of {name.split('.')[0].replace('_', ' ')}" for name in names),
        lemmas=tuple((name.split(".")[0], name.split(".")[0] + "_thing") for name in names),
        edges=tuple(EDGES),
    )


def _subtree_max(names, flat):
    """Hierarchical scores by a plain walk down the edges from every concept."""
    children = {name: [c for p, c in EDGES if p == name] for name in names}
    result = []
    for name in names:
        seen, stack = set(), [name]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack += children[node]
        result.append(max(flat[names.index(node)] for node in seen))
    return np.array(result, dtype=np.float32)


def _square_image(names, first_cell, seed):
    """A red square on grey over cells first_cell..first_cell+3; the target's map marks it."""
    rng = np.random.default_rng(seed)
    low, high = first_cell * 16, (first_cell + 4) * 16
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), GREY, dtype=np.uint8)
    image[low:high, low:high] = RED
    # Every other concept: a random blob, so that switching concepts shows.
    yy, xx = np.mgrid[0:CELLS, 0:CELLS]
    centres = rng.uniform(0, CELLS, (len(names), 2))
    cells = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 8.0)
    target = np.zeros((CELLS, CELLS))
    target[first_cell - 1 : first_cell + 5, first_cell - 1 : first_cell + 5] = 0.5
    target[first_cell : first_cell + 4, first_cell : first_cell + 4] = 1.0
    cells[names.index(TARGET)] = target
    flat = rng.uniform(0.1, 0.25, len(names)).astype(np.float32)
    flat[names.index(DECOY)] = 0.33
    flat[names.index(TARGET)] = 0.30
    return image, cells.astype(np.float32), flat


def _explorer_image(name, names, first_cell, seed):
    image, cells, flat = _square_image(names, first_cell, seed)
    return ExplorerImage(name, image, cells, flat, _subtree_max(names, flat))


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the explorer browser test needs Playwright: pip install playwright (no `playwright install`)")
    if not CHROMIUM.exists():
        pytest.fail(f"the explorer browser test needs Debian's Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OfflinePage:
    """A page in an offline context that records errors and non-file requests."""

    def __init__(self, browser, url):
        self.context = browser.new_context(viewport={"width": 1320, "height": 1280}, device_scale_factor=1)
        self.context.set_offline(True)
        # URLs of requests that would leave the machine, as the page reported
        # them and as the route caught (and aborted) them.
        self.network = []
        self.aborted = []
        self.errors = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", self._request)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']")

    def _request(self, request):
        if not request.url.startswith(("file:", "data:", "blob:")):
            self.network.append(request.url)

    def _route(self, route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort()

    def mean_colour(self, x0, y0, x1, y1):
        """Mean RGB of the main canvas over pixels [y0, y1) x [x0, x1)."""
        return np.array(
            self.page.evaluate(
                """([x0, y0, x1, y1]) => {
                    const data = document.getElementById("view").getContext("2d")
                        .getImageData(x0, y0, x1 - x0, y1 - y0).data;
                    const sum = [0, 0, 0];
                    for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += data[i + c];
                    return sum.map((s) => s / (data.length / 4));
                }""",
                [x0, y0, x1, y1],
            )
        )

    def view_snapshot(self):
        return self.page.evaluate("document.getElementById('view').toDataURL()")

    def set_gamma_exponent(self, exponent):
        """Moves the gamma slider to gamma = 2**exponent, as a user's drag would."""
        self.page.evaluate(
            """(value) => { const s = document.getElementById("gamma"); s.value = value;
                            s.dispatchEvent(new Event("input", { bubbles: true })); }""",
            str(exponent),
        )

    def close(self):
        self.context.close()


def _canvas_box(first_cell, cells):
    """Canvas pixel box [x0, y0, x1, y1) of a block of cells, 2 pixels inside its border."""
    scale = VIEW / CELLS
    return [round(first_cell * scale) + 2, round(first_cell * scale) + 2,
            round((first_cell + cells) * scale) - 2, round((first_cell + cells) * scale) - 2]


def test_search_click_and_the_overlay_in_an_offline_browser(browser, tmp_path):
    names = _names()
    image = _explorer_image("red_square.png", names, first_cell=5, seed=0)
    path = write_explorer(tmp_path, [image], _vocabulary(names), note="synthetic test page")
    view = OfflinePage(browser, path.as_uri())
    page = view.page
    try:
        # Opening shows the concept CLIP sees best; then search and click.
        assert page.inner_text("#concept-card .synset") == DECOY
        before = view.view_snapshot()
        page.fill("#search", "apple")
        hit = page.locator(f"#search-results .hit[data-k='{names.index(TARGET)}']")
        assert page.locator("#search-results .hit").first.get_attribute("data-k") == str(names.index(TARGET))
        hit.click()
        assert page.inner_text("#concept-card .synset") == TARGET
        assert view.view_snapshot() != before

        # White blend (the paper's overlay), gamma 1, cells drawn as blocks.
        grey, red = np.array(GREY, float), np.array(RED, float)
        inside = view.mean_colour(*_canvas_box(5, 4))
        ring = view.mean_colour(*_canvas_box(4, 1))  # map 0.5
        outside = view.mean_colour(0, 0, 100, 100)  # map 0
        np.testing.assert_allclose(inside, red, atol=1.5)
        np.testing.assert_allclose(ring, 0.5 * grey + 0.5 * 255, atol=1.5)
        np.testing.assert_allclose(outside, [255, 255, 255], atol=0.5)
        assert np.abs(inside - outside).max() > 200
        box = page.locator("#view").bounding_box()
        page.mouse.move(box["x"] + 6.5 * VIEW / CELLS, box["y"] + 6.5 * VIEW / CELLS)
        assert page.inner_text("#readout") == "map 1.00 at cell (6, 6)"

        # The exponent slider: gamma = 4 whitens the ring, not the object.
        view.set_gamma_exponent(2)
        assert page.inner_text("#gamma-value") == "4.00"
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(4, 1)), 0.5**4 * grey + (1 - 0.5**4) * 255, atol=1.5)
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(5, 4)), red, atol=1.5)
        view.set_gamma_exponent(0)

        # Smooth: linear between cell centres. Canvas column 128 (pixel
        # centre 128.5) lies between the centres of cell 3 (map 0) and cell
        # 4 (map 0.5); drawn as blocks it is all cell 4.
        column = [128, 7 * VIEW // CELLS, 129, 7 * VIEW // CELLS + 8]
        np.testing.assert_allclose(view.mean_colour(*column), 0.5 * grey + 0.5 * 255, atol=1)
        page.check("#smooth")
        between = 0.5 * (128.5 * CELLS / VIEW - 0.5 - 3)
        np.testing.assert_allclose(view.mean_colour(*column), between * grey + (1 - between) * 255, atol=1)
        page.uncheck("#smooth")

        # Heat map: 0.45 image + 0.55 turbo(m), with matplotlib's turbo.
        import matplotlib

        turbo = matplotlib.colormaps["turbo"]
        page.click("#mode button[data-mode='heat']")
        np.testing.assert_allclose(
            view.mean_colour(*_canvas_box(5, 4)), 0.45 * red + 0.55 * 255 * np.array(turbo(1.0)[:3]), atol=3
        )
        np.testing.assert_allclose(
            view.mean_colour(0, 0, 100, 100), 0.45 * grey + 0.55 * 255 * np.array(turbo(0.0)[:3]), atol=3
        )
        page.click("#mode button[data-mode='image']")
        np.testing.assert_allclose(view.mean_colour(0, 0, 100, 100), grey, atol=0.5)
        page.click("#mode button[data-mode='white']")

        # Parents and siblings side by side: apple.n.01 has two parents.
        compared = page.eval_on_selector_all("#compare figure", "figures => figures.map(f => Number(f.dataset.k))")
        assert {names[k] for k in compared} >= {"edible_fruit.n.01", "pome.n.01", TARGET}
        assert page.locator("#compare canvas").count() == len(compared)
        page.click("#compare figure[data-k='%d']" % names.index("edible_fruit.n.01"))
        assert page.inner_text("#concept-card .synset") == "edible_fruit.n.01"
        assert page.text_content("#compare .children .label") == "Children (1)"
        page.click("#compare .children figure")
        assert page.inner_text("#concept-card .synset") == TARGET

        # Ranking through the hierarchy: a plain sort of the hierarchical
        # scores, ties (a concept and the ancestors it lifts) by flat score.
        page.click("#score-kind button[data-score='hierarchical']")
        shown = page.eval_on_selector_all("#ranking li", "rows => rows.slice(0, 8).map(r => Number(r.dataset.k))")
        expected = sorted(range(len(names)), key=lambda k: (-image.hierarchical[k], -image.flat[k], k))[:8]
        assert shown == expected
        page.click("#score-kind button[data-score='flat']")
        shown = page.eval_on_selector_all("#ranking li", "rows => rows.slice(0, 8).map(r => Number(r.dataset.k))")
        assert shown == list(np.argsort(-image.flat, kind="stable")[:8])

        # The tree: the selected concept is revealed under its best path,
        # with its definition; a collapsed node opens on its toggle.
        page.click("#tabs button[data-tab='tree']")
        row = page.locator(".tree-row.selected")
        assert row.count() == 1 and row.is_visible()
        assert "gloss of apple" in row.inner_text()
        bird = page.locator(f".tree-row[data-k='{names.index('animal.n.01')}']")
        assert bird.count() == 0  # living things are not on the path to apple
        page.click(f".tree-row[data-k='{names.index('whole.n.02')}']")  # selecting does not expand
        page.locator(f"li[data-path$='/{names.index('living_thing.n.01')}'] > .tree-row .toggle").click()
        page.locator(f"li[data-path$='/{names.index('organism.n.01')}'] > .tree-row .toggle").click()
        assert page.locator(f".tree-row[data-k='{names.index('animal.n.01')}']").is_visible()
        page.fill("#search", "apple.n.01")
        page.keyboard.press("Enter")
        assert page.inner_text("#concept-card .synset") == TARGET
        assert "concept=apple.n.01" in page.url

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
        assert view.errors == []
        assert view.network == view.aborted == []

        # The monitor sees requests that leave the machine (and blocks them).
        page.evaluate("fetch('https://example.invalid/probe').catch(() => null)")
        page.wait_for_timeout(200)
        assert view.network == view.aborted == ["https://example.invalid/probe"]
    finally:
        view.close()


def test_image_selector_loads_per_image_scripts(browser, tmp_path):
    names = _names()
    images = [
        _explorer_image("centre.png", names, first_cell=5, seed=1),
        _explorer_image("corner.png", names, first_cell=1, seed=2),
    ]
    path = write_explorer(tmp_path, images, _vocabulary(names), single_file=False)
    view = OfflinePage(browser, path.as_uri() + f"#image=centre.png&concept={TARGET}")
    page = view.page
    try:
        assert page.inner_text("#concept-card .synset") == TARGET  # from the URL
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(5, 4)), RED, atol=1.5)
        page.select_option("#image-select", "1")
        page.wait_for_function("location.hash.includes('image=corner.png')")
        # The concept stays; its map now marks the square in the corner.
        assert page.inner_text("#concept-card .synset") == TARGET
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(1, 4)), RED, atol=1.5)
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(6, 3)), [255, 255, 255], atol=0.5)  # past the ring
        page.click("#prev-image")
        page.wait_for_function("location.hash.includes('image=centre.png')")
        np.testing.assert_allclose(view.mean_colour(*_canvas_box(5, 4)), RED, atol=1.5)
        assert view.errors == [] and view.network == view.aborted == []
    finally:
        view.close()


def test_a_page_of_physical_objects_size_works(browser, tmp_path):
    """7,080 concepts, 7,314 edges: the WordNet slice above plus many leaves."""
    rng = np.random.default_rng(3)
    names = _names()
    first_leaf = len(names)
    inner = sorted({parent for parent, _ in EDGES})
    edges = list(EDGES)
    for leaf in range(7080 - first_leaf):
        names.append(f"leaf_{leaf}.n.01")
        edges.append((inner[rng.integers(len(inner))], names[-1]))
    while len(edges) < 7314:  # second parents for some leaves
        edge = (inner[rng.integers(len(inner))], names[rng.integers(first_leaf, len(names))])
        if edge not in edges:
            edges.append(edge)
    vocabulary = ExplorerVocabulary(
        names=tuple(names),
        definitions=tuple(f"gloss {k}" for k in range(len(names))),
        lemmas=tuple((name.split(".")[0],) for name in names),
        edges=tuple(edges),
    )
    flat = rng.uniform(0.0, 0.3, len(names)).astype(np.float32)
    image = ExplorerImage(
        "big.png",
        rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
        rng.uniform(0, 1, (len(names), CELLS, CELLS)).astype(np.float32),
        flat,
        # Not the true subtree maximum; only the order matters to the page.
        np.maximum(flat, np.float32(0.2)),
    )
    view = OfflinePage(browser, write_explorer(tmp_path, [image], vocabulary).as_uri())
    page = view.page
    try:
        assert page.inner_text("#concept-card .synset") == names[int(np.argmax(flat))]
        assert page.locator("#ranking li").count() == 100
        page.click("#ranking .more")
        assert page.locator("#ranking li").count() == 200
        page.fill("#search", "leaf_6999")
        page.keyboard.press("Enter")
        assert page.inner_text("#concept-card .synset") == "leaf_6999.n.01"
        assert view.errors == [] and view.network == view.aborted == []
    finally:
        view.close()


def test_a_page_made_from_the_bundled_model(browser, tmp_path):
    """Issue 12's acceptance on real maps: the bundled model's page of a one-shape scene."""
    from convis_jax.api import ConVis
    from convis_jax.scenes import DRAWN_CONCEPTS, render_scene

    scene = render_scene(11, size=224, n_objects=(1, 1))
    concept = scene.concepts[0]
    convis = ConVis(None, progress=False)
    path = convis.explore([scene.image], tmp_path, names=["scene"])
    view = OfflinePage(browser, path.as_uri())
    page = view.page

    def show(name):
        page.fill("#search", name)
        page.locator(f"#search-results .hit[data-k='{convis.vocabulary.index(name)}']").click()
        assert page.inner_text("#concept-card .synset") == name

    try:
        # The page may open on the present concept (the model's best guess), so
        # another drawn concept is shown first.
        show(next(name for name in DRAWN_CONCEPTS if name != concept))
        before = view.view_snapshot()
        show(concept)
        assert view.view_snapshot() != before
        # White blend: under the object the map is high and the shape's colour shows;
        # elsewhere the overlay fades towards white.
        scale = VIEW / 224
        x0, y0, x1, y1 = (int(round(v * scale)) for v in scene.boxes[0])
        inside = view.mean_colour(x0, y0, x1, y1)
        mask = np.ones((VIEW, VIEW), bool)
        mask[y0:y1, x0:x1] = False
        pixels = np.array(page.evaluate(
            """() => Array.from(document.getElementById("view").getContext("2d")
                       .getImageData(0, 0, 448, 448).data)""")).reshape(VIEW, VIEW, 4)[..., :3]
        outside = pixels[mask].mean(axis=0)
        assert np.abs(inside - outside).max() > 20, (inside, outside)
        assert outside.mean() > inside.mean()  # faded towards white away from the object
        assert view.errors == [] and view.network == [] and view.aborted == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "explorer-bundled-model.png"), full_page=True)
    finally:
        view.close()


def test_atlas_page_from_the_bundled_model(browser, tmp_path):
    """The atlas page (issue 23), offline: search a concept, its top images in the atlas's
    order with their maps, and a click into the concept explorer."""
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
