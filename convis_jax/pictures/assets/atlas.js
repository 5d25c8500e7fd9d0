// The atlas page: search a concept, see the images that show it most, each with its map.
// Data: the meta block (concepts, images, k, cells shape) and one script per block of
// concepts under atlas-data/, loaded when a concept of that block is first shown (a page
// opened from file:// may load scripts from its folder, not fetch files).
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("convis-atlas-meta").textContent);
  const names = meta.names, definitions = meta.definitions;
  const blocks = {};
  const waiting = {};
  let current = -1;

  function decode(b64) {
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  window.convisAtlasReceive = function (block, data) {
    blocks[block] = {
      images: new Int32Array(decode(data.images).buffer),
      scores: new Float32Array(decode(data.scores).buffer),
      cells: decode(data.cells),
    };
    (waiting[block] || []).forEach((resolve) => resolve(blocks[block]));
    delete waiting[block];
  };

  function loadBlock(block) {
    if (blocks[block]) return Promise.resolve(blocks[block]);
    return new Promise((resolve) => {
      if (!waiting[block]) {
        waiting[block] = [];
        const script = document.createElement("script");
        script.src = meta.blocks[block];
        document.head.appendChild(script);
      }
      waiting[block].push(resolve);
    });
  }

  function overlay(canvas, cells, offset) {
    // White blend as a white layer of alpha 1 - m over the image: pixel = image m + white (1 - m).
    const cy = meta.cy, cx = meta.cx;
    canvas.width = cx; canvas.height = cy;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(cx, cy);
    for (let i = 0; i < cy * cx; i++) {
      pixels.data[4 * i] = pixels.data[4 * i + 1] = pixels.data[4 * i + 2] = 255;
      pixels.data[4 * i + 3] = 255 - cells[offset + i];
    }
    context.putImageData(pixels, 0, 0);
  }

  async function show(k) {
    current = k;
    const card = document.getElementById("concept-card");
    card.innerHTML = "";
    const title = document.createElement("h2");
    title.innerHTML = `${names[k].split(".")[0].replace(/_/g, " ")} <span class="synset">${names[k]}</span>`;
    const gloss = document.createElement("p");
    gloss.textContent = definitions[k];
    card.append(title, gloss);
    history.replaceState(null, "", "#concept=" + encodeURIComponent(names[k]));
    const loading = document.getElementById("loading");
    loading.hidden = false;
    const data = await loadBlock(Math.floor(k / meta.block_size));
    loading.hidden = true;
    if (current !== k) return;
    const row = k % meta.block_size;
    const gallery = document.getElementById("gallery");
    gallery.innerHTML = "";
    for (let j = 0; j < meta.k; j++) {
      const image = data.images[row * meta.k + j];
      if (image < 0) continue;
      const tile = document.createElement("a");
      tile.className = "tile";
      tile.dataset.image = String(image);
      tile.href = meta.explorer + "#image=" + encodeURIComponent(meta.images[image]) +
        "&concept=" + encodeURIComponent(names[k]);
      const frame = document.createElement("div");
      frame.className = "frame";
      const picture = document.createElement("img");
      picture.src = meta.thumbs[image];
      picture.alt = meta.images[image];
      const canvas = document.createElement("canvas");
      overlay(canvas, data.cells, (row * meta.k + j) * meta.cy * meta.cx);
      frame.append(picture, canvas);
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.innerHTML = `<span class="name"></span><span class="score"></span>`;
      caption.firstChild.textContent = meta.images[image];
      caption.lastChild.textContent = data.scores[row * meta.k + j].toFixed(3);
      tile.append(frame, caption);
      gallery.appendChild(tile);
    }
  }

  function search(text) {
    const query = text.trim().toLowerCase().replace(/ /g, "_");
    if (!query) return [];
    const exact = [], starts = [], contains = [];
    for (let k = 0; k < names.length; k++) {
      const name = names[k].toLowerCase();
      const word = name.split(".")[0];
      if (name === query || word === query) exact.push(k);
      else if (word.startsWith(query)) starts.push(k);
      else if (name.includes(query)) contains.push(k);
    }
    return exact.concat(starts, contains).slice(0, 40);
  }

  const input = document.getElementById("search");
  const results = document.getElementById("search-results");
  input.addEventListener("input", () => {
    const hits = search(input.value);
    results.innerHTML = "";
    hits.forEach((k) => {
      const hit = document.createElement("div");
      hit.className = "hit";
      hit.dataset.k = String(k);
      hit.innerHTML = `<span class="synset"></span>`;
      hit.firstChild.textContent = names[k];
      hit.addEventListener("click", () => { results.hidden = true; show(k); });
      results.appendChild(hit);
    });
    results.hidden = hits.length === 0;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const hits = search(input.value);
    if (hits.length) { results.hidden = true; show(hits[0]); }
  });

  document.getElementById("note").textContent = meta.note;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("concept");
  const start = wanted !== null && names.indexOf(wanted) >= 0 ? names.indexOf(wanted) : meta.start;
  show(start).then(() => { document.body.dataset.ready = "true"; });
})();
