// The concept explorer page (written by convis_jax.pictures.explorer).
//
// Data: the element #convis-meta holds the vocabulary (names, definitions,
// lemmas, edges as flat [parent, child, ...] positions) and the list of
// images. Each image's data is either inlined as #convis-image-N or loaded
// from a script beside the page that calls window.convisExplorerReceive(N,
// data); scripts, because a page opened from file:// may not fetch files.
// Per image: a PNG data URL, the cells [K, cy, cx] as base64 uint8 (level /
// 255 is the map value), flat and hierarchical scores as base64 float32.
(function () {
  "use strict";

  const VIEW_SIZE = 448; // CSS pixels of the main view
  const THUMB_SIZE = 122; // CSS pixels of a comparison thumbnail
  const RANKING_PAGE = 100; // rows added per "show more"
  const CHILDREN_SHOWN = 24; // thumbnails before "show all"
  const SEARCH_SHOWN = 40;
  const HEAT_ALPHA = 0.55; // weight of the colour map over the image
  const LUT_STEPS = 1020; // map values are looked up at steps of 1/1020 (exact for level/255)
  // Matplotlib's "turbo" colour map at 17 evenly spaced stops.
  const TURBO = [
    [48, 18, 59], [64, 64, 162], [70, 107, 227], [66, 148, 255], [40, 188, 235], [24, 221, 194],
    [50, 242, 152], [109, 254, 98], [164, 252, 60], [205, 236, 52], [238, 207, 58], [253, 172, 52],
    [251, 126, 33], [235, 80, 14], [208, 47, 5], [169, 22, 1], [122, 4, 3],
  ];

  const meta = JSON.parse(document.getElementById("convis-meta").textContent);
  const K = meta.names.length;
  const parents = Array.from({ length: K }, () => []);
  const children = Array.from({ length: K }, () => []);
  for (let e = 0; e < meta.edges.length; e += 2) {
    children[meta.edges[e]].push(meta.edges[e + 1]);
    parents[meta.edges[e + 1]].push(meta.edges[e]);
  }
  const roots = [];
  for (let k = 0; k < K; k++) if (parents[k].length === 0) roots.push(k);
  const nameIndex = new Map(meta.names.map((name, k) => [name, k]));
  // Search keys: synset names and lemmas, lower case, underscores as spaces.
  const searchNames = meta.names.map((name) => name.toLowerCase().replace(/_/g, " "));
  const searchLemmas = meta.lemmas.map((lemmas) => lemmas.map((l) => l.toLowerCase().replace(/_/g, " ")));

  const state = {
    imageIndex: -1, // image shown
    requested: -1, // image being loaded
    data: null, // decoded data of the image shown
    selected: -1, // concept shown
    mode: "white",
    gamma: 1,
    smooth: false,
    score: "flat",
    tab: "ranking",
    rankingShown: RANKING_PAGE,
    allChildren: false,
    expanded: new Set(), // tree paths ("3/17/42") that are open
    searchHits: [],
    searchActive: 0,
  };
  const decoded = new Map(); // image index -> decoded data
  const waiting = new Map(); // image index -> resolve function of its script

  const $ = (id) => document.getElementById(id);
  const view = $("view");

  // ---------------------------------------------------------------- helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function displayName(k) {
    const lemmas = meta.lemmas[k];
    return (lemmas.length ? lemmas[0] : meta.names[k].split(".")[0]).replace(/_/g, " ");
  }

  function nameBlock(k) {
    const span = el("span", "name");
    span.append(el("span", "", displayName(k) + " "), el("span", "synset", meta.names[k]));
    return span;
  }

  function formatScore(value) {
    return value.toFixed(3);
  }

  function scoreOf(k) {
    return state.data.scores[state.score][k];
  }

  function scoreBar(k) {
    const data = state.data;
    const range = data.range[state.score];
    const fraction = range.hi > range.lo ? (scoreOf(k) - range.lo) / (range.hi - range.lo) : 1;
    const bar = el("span", "scorebar");
    const fill = el("i");
    fill.style.width = (100 * Math.max(0.03, fraction)).toFixed(1) + "%";
    bar.append(fill);
    const wrap = el("span", "score", formatScore(scoreOf(k)));
    wrap.append(bar);
    return wrap;
  }

  function byScore(list) {
    const rank = state.data.rank[state.score];
    return list.slice().sort((a, b) => rank[a] - rank[b]);
  }

  // The parent with the best rank: the way up that the image supports most.
  function bestParent(k) {
    return parents[k].length ? byScore(parents[k])[0] : -1;
  }

  function pathToRoot(k) {
    const path = [k];
    for (let p = bestParent(k); p >= 0; p = bestParent(p)) path.unshift(p);
    return path;
  }

  // ------------------------------------------------------------ decoding

  function bytesOf(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  function floatsOf(base64) {
    const bytes = bytesOf(base64);
    const view = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }

  // Concepts sorted by `primary` descending, ties broken by `secondary`
  // (so that through the hierarchy, a concept comes before the ancestors
  // that inherit its score).
  function orderBy(primary, secondary) {
    const order = Array.from({ length: K }, (_, k) => k);
    order.sort((a, b) => primary[b] - primary[a] || secondary[b] - secondary[a] || a - b);
    const rank = new Int32Array(K);
    order.forEach((k, r) => { rank[k] = r; });
    return { order, rank };
  }

  function rangeOf(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return { lo, hi };
  }

  async function decodeImage(index, payload) {
    const cells = bytesOf(payload.cells);
    if (cells.length !== K * payload.cy * payload.cx) {
      throw new Error(`image ${payload.name}: expected ${K}x${payload.cy}x${payload.cx} cells, found ${cells.length}`);
    }
    const img = new Image();
    img.src = payload.image;
    await img.decode();
    const flat = floatsOf(payload.flat);
    const hierarchical = floatsOf(payload.hierarchical);
    const byFlat = orderBy(flat, hierarchical);
    const byHierarchy = orderBy(hierarchical, flat);
    return {
      name: payload.name, img, cy: payload.cy, cx: payload.cx, cells,
      scores: { flat, hierarchical },
      order: { flat: byFlat.order, hierarchical: byHierarchy.order },
      rank: { flat: byFlat.rank, hierarchical: byHierarchy.rank },
      range: { flat: rangeOf(flat), hierarchical: rangeOf(hierarchical) },
      pixels: new Map(), // canvas size -> the image's RGBA pixels at that size
    };
  }

  function payloadOf(index) {
    const inline = document.getElementById("convis-image-" + index);
    if (inline) return Promise.resolve(JSON.parse(inline.textContent));
    return new Promise((resolve, reject) => {
      waiting.set(index, resolve);
      const script = document.createElement("script");
      script.src = meta.images[index].script;
      script.onerror = () => reject(new Error("could not load " + meta.images[index].script));
      document.head.append(script);
    });
  }

  window.convisExplorerReceive = function (index, payload) {
    const resolve = waiting.get(index);
    if (resolve) {
      waiting.delete(index);
      resolve(payload);
    }
  };

  async function imageData(index) {
    if (!decoded.has(index)) decoded.set(index, await decodeImage(index, await payloadOf(index)));
    return decoded.get(index);
  }

  // ------------------------------------------------------------ rendering maps

  function imagePixels(data, size) {
    let pixels = data.pixels.get(size);
    if (!pixels) {
      const canvas = el("canvas");
      canvas.width = canvas.height = size;
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.imageSmoothingEnabled = true;
      context.imageSmoothingQuality = "high";
      context.drawImage(data.img, 0, 0, size, size);
      pixels = context.getImageData(0, 0, size, size).data;
      data.pixels.set(size, pixels);
    }
    return pixels;
  }

  // Where each output pixel of one axis reads the cells: nearest cell, or
  // linear interpolation between cell centres (clamped at the border).
  function sampling(size, cellCount, smooth) {
    const first = new Int32Array(size), second = new Int32Array(size), weight = new Float32Array(size);
    for (let p = 0; p < size; p++) {
      if (smooth) {
        const f = Math.min(Math.max((p + 0.5) * cellCount / size - 0.5, 0), cellCount - 1);
        first[p] = Math.floor(f);
        second[p] = Math.min(first[p] + 1, cellCount - 1);
        weight[p] = f - first[p];
      } else {
        first[p] = second[p] = Math.min(cellCount - 1, Math.floor((p + 0.5) * cellCount / size));
      }
    }
    return { first, second, weight };
  }

  function powerTable(gamma) {
    const table = new Float32Array(LUT_STEPS + 1);
    for (let i = 0; i <= LUT_STEPS; i++) table[i] = Math.pow(i / LUT_STEPS, gamma);
    return table;
  }

  function turbo(t) {
    const x = Math.min(Math.max(t, 0), 1) * (TURBO.length - 1);
    const i = Math.min(Math.floor(x), TURBO.length - 2), w = x - i;
    return TURBO[i].map((c, j) => c + (TURBO[i + 1][j] - c) * w);
  }

  const turboTable = (() => {
    const table = new Float32Array(3 * (LUT_STEPS + 1));
    for (let i = 0; i <= LUT_STEPS; i++) table.set(turbo(i / LUT_STEPS), 3 * i);
    return table;
  })();

  // Draws concept k's map over the image into `canvas` at `cssSize` pixels.
  function drawConcept(canvas, k, cssSize) {
    const data = state.data;
    const size = Math.round(cssSize * Math.min(window.devicePixelRatio || 1, 2));
    if (canvas.width !== size) canvas.width = size;
    if (canvas.height !== size) canvas.height = size;
    const context = canvas.getContext("2d");
    const base = imagePixels(data, size);
    const out = context.createImageData(size, size);
    const px = out.data;
    if (k < 0 || state.mode === "image") {
      px.set(base);
      context.putImageData(out, 0, 0);
      return;
    }
    const { cy, cx, cells } = data;
    const offset = k * cy * cx;
    const ys = sampling(size, cy, state.smooth), xs = sampling(size, cx, state.smooth);
    const power = powerTable(state.gamma);
    const heat = state.mode === "heat";
    const scale = LUT_STEPS / 255;
    for (let y = 0; y < size; y++) {
      const row0 = offset + ys.first[y] * cx, row1 = offset + ys.second[y] * cx, wy = ys.weight[y];
      for (let x = 0; x < size; x++) {
        const x0 = xs.first[x], x1 = xs.second[x], wx = xs.weight[x];
        const top = cells[row0 + x0] + (cells[row0 + x1] - cells[row0 + x0]) * wx;
        const bottom = cells[row1 + x0] + (cells[row1 + x1] - cells[row1 + x0]) * wx;
        const step = Math.round((top + (bottom - top) * wy) * scale);
        const w = power[step];
        const o = 4 * (y * size + x);
        if (heat) {
          const c = 3 * Math.round(w * LUT_STEPS);
          px[o] = base[o] * (1 - HEAT_ALPHA) + turboTable[c] * HEAT_ALPHA;
          px[o + 1] = base[o + 1] * (1 - HEAT_ALPHA) + turboTable[c + 1] * HEAT_ALPHA;
          px[o + 2] = base[o + 2] * (1 - HEAT_ALPHA) + turboTable[c + 2] * HEAT_ALPHA;
        } else {
          // The paper's overlay: blend towards white by (1 - m^gamma).
          px[o] = base[o] * w + 255 * (1 - w);
          px[o + 1] = base[o + 1] * w + 255 * (1 - w);
          px[o + 2] = base[o + 2] * w + 255 * (1 - w);
        }
        px[o + 3] = 255;
      }
    }
    context.putImageData(out, 0, 0);
  }

  function drawLegend() {
    const stops = [];
    for (let i = 0; i <= 10; i++) {
      const w = Math.pow(i / 10, state.gamma);
      const colour = state.mode === "heat" ? turbo(w) : [255 - 175 * w, 255 - 175 * w, 255 - 175 * w];
      stops.push(`rgb(${colour.map(Math.round).join(",")}) ${i * 10}%`);
    }
    $("legend").style.visibility = state.mode === "image" ? "hidden" : "visible";
    $("legend-bar").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  }

  function redrawMaps() {
    if (!state.data) return;
    drawConcept(view, state.selected, VIEW_SIZE);
    for (const canvas of document.querySelectorAll("#compare canvas")) {
      drawConcept(canvas, Number(canvas.dataset.k), THUMB_SIZE);
    }
    drawLegend();
  }

  // ------------------------------------------------------------ panels

  function markSelected() {
    for (const node of document.querySelectorAll(".selected")) node.classList.remove("selected");
    for (const node of document.querySelectorAll(`[data-k="${state.selected}"]`)) {
      if (node.matches(".ranking-list li, .tree-row")) node.classList.add("selected");
    }
  }

  function renderCard() {
    const card = $("concept-card");
    card.replaceChildren();
    const k = state.selected;
    if (k < 0) return;
    const data = state.data;
    const title = el("h2", "", displayName(k));
    title.append(el("span", "synset", meta.names[k]));
    const lemmas = el("p", "lemmas", meta.lemmas[k].map((l) => l.replace(/_/g, " ")).join(", "));
    const definition = el("p", "definition", meta.definitions[k]);
    const scores = el("dl", "scores");
    for (const [kind, label] of [["flat", "Flat"], ["hierarchical", "Through hierarchy"]]) {
      scores.append(el("dt", "", label));
      scores.append(el("dd", "",
        `${formatScore(data.scores[kind][k])} \u00b7 rank ${data.rank[kind][k] + 1} of ${K.toLocaleString("en")}`));
    }
    const path = el("nav", "path");
    pathToRoot(k).forEach((p, i) => {
      if (i) path.append(el("span", "sep", "\u203a"));
      if (p === k) path.append(el("strong", "", displayName(p)));
      else {
        const link = el("a", "", displayName(p));
        link.title = meta.names[p] + ": " + meta.definitions[p];
        link.addEventListener("click", () => select(p, { reveal: true }));
        path.append(link);
      }
    });
    if (parents[k].length > 1) path.append(el("span", "synset", `  (${parents[k].length} parents)`));
    card.append(title, lemmas, definition, scores, path);
  }

  function renderRanking() {
    const panel = $("ranking");
    const list = el("ol", "ranking-list");
    const order = state.data.order[state.score];
    const shown = Math.min(state.rankingShown, K);
    for (let r = 0; r < shown; r++) {
      const k = order[r];
      const row = el("li");
      row.dataset.k = k;
      row.title = meta.definitions[k];
      const label = el("span", "label");
      label.append(nameBlock(k));
      row.append(el("span", "rank", String(r + 1)), label, scoreBar(k));
      row.addEventListener("click", () => select(k, { reveal: false }));
      list.append(row);
    }
    panel.replaceChildren(list);
    if (shown < K) {
      const more = el("button", "more", `Show ${Math.min(RANKING_PAGE, K - shown)} more (${shown.toLocaleString("en")} of ${K.toLocaleString("en")} shown)`);
      more.type = "button";
      more.addEventListener("click", () => {
        const top = panel.scrollTop;
        state.rankingShown += RANKING_PAGE;
        renderRanking();
        panel.scrollTop = top;
        markSelected();
      });
      panel.append(more);
    }
  }

  function treeItem(k, path) {
    const item = el("li");
    item.dataset.path = path;
    const row = el("div", "tree-row");
    row.dataset.k = k;
    row.title = meta.definitions[k];
    const count = children[k].length;
    const toggle = el("button", "toggle" + (count ? "" : " leaf"), count ? "\u25b6" : "\u2022");
    toggle.type = "button";
    toggle.setAttribute("aria-label", count ? "Expand" : "Leaf");
    const text = el("div", "text");
    const name = nameBlock(k);
    if (count) {
      const badge = el("span", "count", String(count));
      badge.title = `${count} ${count === 1 ? "child" : "children"}`;
      name.append(badge);
    }
    text.append(name, el("div", "gloss", meta.definitions[k]));
    row.append(toggle, text, scoreBar(k));
    item.append(row);
    if (count) {
      toggle.addEventListener("click", (event) => {
        event.stopPropagation();
        setOpen(item, k, !state.expanded.has(path));
      });
      if (state.expanded.has(path)) setOpen(item, k, true);
    }
    row.addEventListener("click", () => select(k, { reveal: false }));
    return item;
  }

  // Children are built when a node is first opened: the tree has thousands
  // of nodes, and a node with several parents appears under each of them.
  function setOpen(item, k, open) {
    const path = item.dataset.path;
    if (open) state.expanded.add(path); else state.expanded.delete(path);
    let list = item.querySelector(":scope > ul");
    if (open && !list) {
      list = el("ul");
      for (const child of byScore(children[k])) list.append(treeItem(child, path + "/" + child));
      item.append(list);
    }
    if (list) list.hidden = !open;
    const toggle = item.querySelector(":scope > .tree-row > .toggle");
    toggle.textContent = open ? "\u25bc" : "\u25b6";
    toggle.setAttribute("aria-label", open ? "Collapse" : "Expand");
  }

  function renderTree() {
    const panel = $("tree");
    const top = panel.scrollTop;
    const list = el("ul", "tree");
    for (const root of byScore(roots)) list.append(treeItem(root, String(root)));
    panel.replaceChildren(list);
    panel.scrollTop = top;
  }

  function revealInTree(k) {
    const path = pathToRoot(k);
    let key = "";
    for (let i = 0; i < path.length; i++) {
      key = i ? key + "/" + path[i] : String(path[i]);
      const item = $("tree").querySelector(`li[data-path="${key}"]`);
      if (!item) return;
      if (i < path.length - 1) setOpen(item, path[i], true);
      else if (state.tab === "tree") item.firstChild.scrollIntoView({ block: "nearest" });
    }
  }

  function thumb(k, current) {
    const figure = el("figure", "thumb" + (current ? " current" : ""));
    figure.dataset.k = k;
    figure.title = meta.names[k] + ": " + meta.definitions[k];
    const canvas = el("canvas");
    canvas.dataset.k = k;
    const caption = el("figcaption");
    caption.append(el("div", "name", displayName(k)), el("div", "synset", meta.names[k]));
    const score = el("div", "score",
      `${formatScore(scoreOf(k))} \u00b7 #${state.data.rank[state.score][k] + 1}`);
    caption.append(score);
    figure.append(canvas, caption);
    figure.addEventListener("click", () => select(k, { reveal: true }));
    return figure;
  }

  function group(label, concepts, className) {
    const box = el("div", "group" + (className ? " " + className : ""));
    box.append(el("div", "label", label));
    const thumbs = el("div", "thumbs");
    for (const k of concepts) thumbs.append(thumb(k, k === state.selected));
    box.append(thumbs);
    return box;
  }

  function renderCompare() {
    const section = $("compare");
    section.replaceChildren();
    const k = state.selected;
    if (k < 0) return;
    const heading = el("h3", "", `Compare \u201c${displayName(k)}\u201d with its parents and children `);
    heading.append(el("span", "synset", "(sorted by score; click to select)"));
    const groups = el("div", "groups");
    if (parents[k].length) groups.append(group(parents[k].length > 1 ? "Parents" : "Parent", byScore(parents[k])));
    let narrower = children[k], label = `Children (${children[k].length})`;
    if (narrower.length || !parents[k].length) {
      groups.append(group("This concept", [k]));
    } else {
      // A leaf: compare it with its siblings (itself among them) instead.
      const parent = bestParent(k);
      narrower = children[parent];
      label = `Siblings under \u201c${displayName(parent)}\u201d (${narrower.length})`;
    }
    if (narrower.length) {
      const sorted = byScore(narrower);
      const shown = state.allChildren ? sorted : sorted.slice(0, CHILDREN_SHOWN);
      const box = group(label, shown, "children");
      if (shown.length < sorted.length) {
        const more = el("button", "more", `Show all ${sorted.length}`);
        more.type = "button";
        more.addEventListener("click", () => { state.allChildren = true; renderCompare(); redrawMaps(); });
        box.append(more);
      }
      groups.append(box);
    }
    section.append(heading, groups);
  }

  function renderBrowser() {
    renderRanking();
    renderTree();
    if (state.selected >= 0) revealInTree(state.selected);
    markSelected();
  }

  // ------------------------------------------------------------ actions

  function updateHash() {
    if (!state.data) return;
    const hash = `#image=${encodeURIComponent(state.data.name)}&concept=${encodeURIComponent(meta.names[state.selected])}`;
    history.replaceState(null, "", hash);
  }

  function select(k, options) {
    if (!state.data || k < 0 || k >= K) return;
    if (k !== state.selected) state.allChildren = false;
    state.selected = k;
    renderCard();
    renderCompare();
    redrawMaps();
    if (options && options.reveal) revealInTree(k);
    markSelected();
    updateHash();
  }

  async function showImage(index, concept) {
    state.requested = index;
    $("loading").hidden = false;
    const data = await imageData(index);
    if (state.requested !== index) return; // another image was chosen meanwhile
    state.imageIndex = index;
    state.data = data;
    $("image-select").value = String(index);
    $("prev-image").disabled = index === 0;
    $("next-image").disabled = index === meta.images.length - 1;
    state.rankingShown = RANKING_PAGE;
    const k = concept !== undefined && concept >= 0 ? concept
      : state.selected >= 0 ? state.selected : data.order.flat[0];
    state.selected = -1;
    renderBrowser();
    select(k, { reveal: true });
    $("loading").hidden = true;
    document.body.dataset.ready = "true";
  }

  function setScoreKind(kind) {
    state.score = kind;
    for (const b of $("score-kind").children) b.classList.toggle("active", b.dataset.score === kind);
    $("ranking").scrollTop = 0;
    renderBrowser();
    renderCompare();
    redrawMaps();
  }

  function setTab(tab) {
    state.tab = tab;
    for (const b of $("tabs").children) b.classList.toggle("active", b.dataset.tab === tab);
    $("ranking").hidden = tab !== "ranking";
    $("tree").hidden = tab !== "tree";
    if (tab === "tree" && state.selected >= 0) revealInTree(state.selected);
  }

  // ------------------------------------------------------------ search

  // 0: the synset name, 1: a lemma, 2: a lemma or name starts with the
  // query, 3: a word of a lemma does, 4: the query occurs anywhere in them.
  function matchTier(k, query) {
    const name = searchNames[k];
    if (name === query) return 0;
    const lemmas = searchLemmas[k];
    let tier = 5;
    for (const lemma of lemmas) {
      if (lemma === query) return 1;
      if (lemma.startsWith(query)) tier = Math.min(tier, 2);
      else if ((" " + lemma).includes(" " + query)) tier = Math.min(tier, 3);
      else if (lemma.includes(query)) tier = Math.min(tier, 4);
    }
    if (tier > 2 && name.startsWith(query)) tier = 2;
    if (tier > 4 && name.includes(query)) tier = 4;
    return tier;
  }

  function runSearch() {
    const box = $("search-results");
    const query = $("search").value.trim().toLowerCase().replace(/_/g, " ");
    if (!query || !state.data) {
      box.hidden = true;
      state.searchHits = [];
      return;
    }
    const rank = state.data.rank[state.score];
    const hits = [];
    for (let k = 0; k < K; k++) {
      const tier = matchTier(k, query);
      if (tier < 5) hits.push([tier, rank[k], k]);
    }
    hits.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    state.searchHits = hits.slice(0, SEARCH_SHOWN).map((hit) => hit[2]);
    state.searchActive = 0;
    box.replaceChildren(el("div", "count",
      hits.length ? `${hits.length} match${hits.length === 1 ? "" : "es"}` + (hits.length > SEARCH_SHOWN ? `, best ${SEARCH_SHOWN} shown` : "")
        : "No concept matches"));
    state.searchHits.forEach((k, i) => {
      const hit = el("div", "hit" + (i === 0 ? " active" : ""));
      hit.dataset.k = k;
      hit.title = meta.definitions[k];
      hit.append(nameBlock(k), el("span", "score", formatScore(scoreOf(k))));
      hit.addEventListener("mousedown", (event) => {
        event.preventDefault(); // keep the focus in the box until the click is handled
        chooseHit(k);
      });
      box.append(hit);
    });
    box.hidden = false;
  }

  function chooseHit(k) {
    $("search-results").hidden = true;
    select(k, { reveal: true });
  }

  function moveActive(step) {
    const hits = $("search-results").querySelectorAll(".hit");
    if (!hits.length) return;
    state.searchActive = (state.searchActive + step + hits.length) % hits.length;
    hits.forEach((hit, i) => hit.classList.toggle("active", i === state.searchActive));
    hits[state.searchActive].scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------ wiring

  function readHash() {
    const found = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      const [key, value] = part.split("=");
      if (key && value !== undefined) found[key] = decodeURIComponent(value);
    }
    const image = meta.images.findIndex((entry) => entry.name === found.image);
    const concept = nameIndex.has(found.concept) ? nameIndex.get(found.concept) : undefined;
    return { image: image >= 0 ? image : 0, concept };
  }

  function wire() {
    if (meta.note) $("note").textContent = meta.note;
    const select_ = $("image-select");
    meta.images.forEach((entry, i) => {
      const option = el("option", "", entry.name);
      option.value = String(i);
      select_.append(option);
    });
    if (meta.images.length === 1) {
      $("prev-image").hidden = true;
      $("next-image").hidden = true;
      select_.disabled = true;
    } else {
      $("image-count").textContent = `${meta.images.length} images`;
    }
    select_.addEventListener("change", () => showImage(Number(select_.value)));
    $("prev-image").addEventListener("click", () => showImage(Math.max(0, state.imageIndex - 1)));
    $("next-image").addEventListener("click", () => showImage(Math.min(meta.images.length - 1, state.imageIndex + 1)));

    for (const button of $("mode").children) {
      button.addEventListener("click", () => {
        state.mode = button.dataset.mode;
        for (const b of $("mode").children) b.classList.toggle("active", b === button);
        redrawMaps();
      });
    }
    $("gamma").addEventListener("input", () => {
      state.gamma = Math.pow(2, Number($("gamma").value));
      $("gamma-value").textContent = state.gamma.toFixed(2);
      redrawMaps();
    });
    $("smooth").addEventListener("change", () => { state.smooth = $("smooth").checked; redrawMaps(); });
    for (const button of $("score-kind").children) button.addEventListener("click", () => setScoreKind(button.dataset.score));
    for (const button of $("tabs").children) button.addEventListener("click", () => setTab(button.dataset.tab));

    const search = $("search");
    search.addEventListener("input", runSearch);
    search.addEventListener("focus", () => { if (search.value.trim()) runSearch(); });
    search.addEventListener("blur", () => { $("search-results").hidden = true; });
    search.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown") { moveActive(1); event.preventDefault(); }
      else if (event.key === "ArrowUp") { moveActive(-1); event.preventDefault(); }
      else if (event.key === "Enter" && state.searchHits.length) chooseHit(state.searchHits[state.searchActive]);
      else if (event.key === "Escape") $("search-results").hidden = true;
    });

    view.addEventListener("mousemove", (event) => {
      const data = state.data;
      if (!data || state.selected < 0) return;
      const box = view.getBoundingClientRect();
      const row = Math.min(data.cy - 1, Math.floor((event.clientY - box.top) / box.height * data.cy));
      const column = Math.min(data.cx - 1, Math.floor((event.clientX - box.left) / box.width * data.cx));
      const value = data.cells[state.selected * data.cy * data.cx + row * data.cx + column] / 255;
      $("readout").textContent = `map ${value.toFixed(2)} at cell (${row}, ${column})`;
    });
    view.addEventListener("mouseleave", () => { $("readout").textContent = ""; });
  }

  wire();
  const start = readHash();
  showImage(start.image, start.concept).catch((error) => {
    $("loading").textContent = "Could not load this image: " + error.message;
    throw error;
  });
})();
