"""The concept atlas: what storing window embeddings costs, and what it buys.

One ViT-B/32-shaped CLIP (random weights, `common.benchmark_checkpoint`; full
depth unless --depth says otherwise), 224 x 224 scenes, the physical-objects
vocabulary (7,080 concepts). Reported:

* bytes per image of a float16 atlas (and float32), measured on disk;
* build images/s (`build_atlas`: encode every window, store it) against the
  all-concept sweep's images/s (`ConVis.occlusion_cells(images, None)`, ranks of
  every concept in every window included), in interleaved rounds after a
  warm-up; the issue's target is build time <= 1.1 x sweep time;
* the time for all 7,080 maps (cell form) of one stored image from a warm
  atlas (target < 2 s on a 2-core CPU), after cross-checking them against
  the sweep's maps of the same image;
* over 1,000 stored images (`--queries-only` runs just these, no encoder):
  all maps of one of them again, the top 20 images of one concept by whole-image
  score (target < 1 s) and by map peak (every window's rank of the concept
  in every image), with its cost per image. These 1,000 images are
  synthetic: random unit vectors written through the real store code
  (`atlas.store.Part`), since encoding 1,000 images would take hours here.

Timings on a shared machine are noisy; the medians of interleaved rounds are
reported with every round's time.

Run alone: `python benchmarks/bench_atlas.py [--depth 12] [--images 1] [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

# A sibling module: the script's folder is first on sys.path.
import common
import numpy as np


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def synthetic_atlas(folder: Path, model, count: int, seed: int = 0, batch: int = 50) -> None:
    """An atlas of `count` images whose embeddings are random unit vectors (float16),
    written through the store's own code, as `build_atlas` writes real ones."""
    from convis_jax.atlas.store import ImageRecord, Part, claim, new_manifest
    from convis_jax.core.windows import window_grid

    grid = window_grid((224, 224))
    dim = model.embedding_dim
    claim(folder, new_manifest(model, grid, padding="noise", seed=0, dtype="float16",
                               images=[f"synthetic/{i:05d}.jpg" for i in range(count)],
                               sources=[]))
    part = Part(folder, 0, n_images=count, n_windows=grid.n_windows, dim=dim, dtype="float16")
    rng = np.random.default_rng(seed)
    for first in range(0, count, batch):
        numbers = list(range(first, min(first + batch, count)))
        windows = rng.standard_normal((len(numbers), grid.n_windows, dim)).astype(np.float32)
        windows /= np.linalg.norm(windows, axis=-1, keepdims=True)
        image = rng.standard_normal((len(numbers), dim)).astype(np.float32)
        image /= np.linalg.norm(image, axis=-1, keepdims=True)
        part.write([ImageRecord(n, f"synthetic/{n:05d}.jpg", (224, 224), (0, 0, 224), "part-0")
                    for n in numbers], windows, image)


def run(depth: int = 12, images: int = 1, repeats: int = 2, stored: int = 1000,
        concept: str = "dog.n.01", *, checkpoint: Path | None = None,
        vocabulary="physical_objects", log=print) -> dict:
    """The atlas figures (module docstring) as a JSON-able dict.

    Args:
        depth: vision and text depth of the ViT-B/32-shaped benchmark checkpoint.
        images: images per timed build and sweep.
        repeats: interleaved rounds.
        stored: synthetic stored images of the ranking queries.
        concept: the concept those queries rank.
        checkpoint: another transformers CLIP folder instead (the smoke test's tiny one).
        vocabulary: what `ConVis` and `Atlas.open` accept.
    """
    from PIL import Image

    from convis_jax.api import ConVis
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.models.loading import load_clip
    from convis_jax.scenes import render_scene

    spec = {name: dict(part, num_hidden_layers=depth) if isinstance(part, dict) else part
            for name, part in common.VIT_B32.items()}
    if checkpoint is None:
        checkpoint = (common.benchmark_checkpoint(spec=spec) if depth != 12
                      else common.benchmark_checkpoint())
        description = f"ViT-B/32 shape, random weights, vision depth {depth}"
    else:
        description = str(checkpoint)
    model = load_clip(checkpoint)
    convis = ConVis(model, vocabulary, progress=False)
    results = {"model": description,
               "concepts": len(convis.vocabulary), "environment": common.environment("float32"),
               "note": "shared 2-core machine: timings are noisy"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        for i in range(images + 1):
            Image.fromarray(render_scene(100 + i, size=224).image).save(photos / f"{i:03d}.png")
        paths = sorted(photos.iterdir())
        warm, timed_paths = paths[:1], paths[1:]

        # Build against sweep, interleaved, after one warm-up image each.
        def sweep():
            return convis.occlusion_cells(timed_paths, None)

        builds = iter(range(10_000))

        def build():
            out = tmp / f"build-{next(builds)}"
            build_atlas(timed_paths, out, model=model, batch=1, progress=False)
            return out

        log("warm-up: one image through the sweep and the build")
        first_sweep, _ = common.timed(convis.occlusion_cells, warm, None)
        first_build, _ = common.timed(build_atlas, warm, tmp / "warm", model=model, batch=1,
                                      progress=False)
        timings = {"sweep": common.Timing(first_sweep), "build": common.Timing(first_build)}
        outputs = {}
        for r in range(repeats):
            for name, fn in (("sweep", sweep), ("build", build)):
                seconds, outputs[name] = common.timed(fn)
                timings[name].times.append(seconds)
                log(f"  round {r + 1}/{repeats} {name}: {seconds:.1f} s for {images} image(s)")
        sweep_ips = images / timings["sweep"].median_s
        build_ips = images / timings["build"].median_s
        results["build_vs_sweep"] = {
            "images": images, "sweep": timings["sweep"].to_dict(),
            "build": timings["build"].to_dict(), "sweep_images_per_s": sweep_ips,
            "build_images_per_s": build_ips,
            "build_cost_over_sweep_cost": timings["build"].median_s / timings["sweep"].median_s}
        log(f"build {build_ips:.4f} images/s, sweep {sweep_ips:.4f} images/s: build costs "
            f"{results['build_vs_sweep']['build_cost_over_sweep_cost']:.2f} x a sweep")

        atlas_dir = outputs["build"]
        float16_bytes = folder_bytes(atlas_dir) / images
        build_atlas(warm, tmp / "float32", model=model, dtype="float32", batch=1, progress=False)
        float32_bytes = folder_bytes(tmp / "float32")
        results["bytes_per_image"] = {"float16": float16_bytes, "float32": float32_bytes,
                                      "windows_float16_payload": 730 * model.embedding_dim * 2}
        log(f"bytes per image: float16 {float16_bytes:,.0f}, float32 {float32_bytes:,.0f}")

        # All 7,080 maps of one stored image from a warm atlas, checked against the sweep.
        atlas = Atlas.open(atlas_dir, model=model, vocabulary=vocabulary, progress=False)
        image_id = atlas.image_ids[0]
        first, cells = common.timed(atlas.cells, image_id)
        correlation = float(np.corrcoef(cells.ravel(), outputs["sweep"][0].ravel())[0, 1])
        assert cells.shape == outputs["sweep"][:1].shape and correlation >= 0.999, correlation
        all_maps = common.Timing(first)
        for _ in range(3):
            all_maps.times.append(common.timed(atlas.cells, image_id)[0])
        results["all_maps_one_image"] = dict(all_maps.to_dict(), shape=list(cells.shape),
                                             correlation_with_sweep_float16=correlation)
        log(f"all {cells.shape[1]} maps of one stored image: {all_maps.median_s:.2f} s "
            f"(first call {first:.2f} s); correlation with the sweep {correlation:.6f}")

        results.update(stored_queries(model, tmp / "many", stored, concept, vocabulary, log))
    return results


def stored_queries(model, folder: Path, stored: int, concept: str,
                   vocabulary="physical_objects", log=print) -> dict:
    """Rankings over `stored` synthetic stored images, and all maps of one of them."""
    from convis_jax.atlas import Atlas

    start = time.perf_counter()
    synthetic_atlas(folder, model, stored)
    write_s = time.perf_counter() - start
    atlas = Atlas.open(folder, model=model, vocabulary=vocabulary, progress=False)
    image_id = atlas.image_ids[0]
    all_maps = common.Timing(common.timed(atlas.cells, image_id)[0])
    for _ in range(3):
        all_maps.times.append(common.timed(atlas.cells, image_id)[0])
    by_image = common.Timing(common.timed(atlas.top_images, concept, 20)[0])
    for _ in range(3):
        by_image.times.append(common.timed(atlas.top_images, concept, 20)[0])
    subset = atlas.image_ids[:8]
    first_peak = common.timed(atlas.top_images, concept, 5, by="map_peak", image_ids=subset)[0]
    peak_s, _ = common.timed(atlas.top_images, concept, 20, by="map_peak")
    results = {"stored_synthetic": {
        "images": stored, "write_s": write_s, "bytes": folder_bytes(folder),
        "all_maps_one_image": all_maps.to_dict(),
        "top20_by_image": by_image.to_dict(),
        "top20_by_map_peak_s": peak_s, "map_peak_first_call_8_images_s": first_peak,
        "map_peak_per_image_s": peak_s / stored}}
    log(f"{stored} stored images (synthetic, written by the store in {write_s:.1f} s): all "
        f"{len(atlas.vocabulary)} maps of one {all_maps.median_s:.2f} s, top-20 by image "
        f"{by_image.median_s * 1000:.1f} ms, by map peak {peak_s:.1f} s "
        f"({peak_s / stored * 1000:.1f} ms an image)")
    shutil.rmtree(folder)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=12, help="vision tower depth")
    parser.add_argument("--images", type=int, default=1, help="images per timed build/sweep")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--stored", type=int, default=1000, help="synthetic stored images")
    parser.add_argument("--out", type=Path,
                        default=common.RESULTS_DIR / f"{common.machine_name()}-atlas.json")
    parser.add_argument("--queries-only", action="store_true",
                        help="only the stored-image queries (no encoder work)")
    args = parser.parse_args(argv)
    if args.queries_only:
        from convis_jax.models.loading import load_clip

        with tempfile.TemporaryDirectory() as tmp:
            results = dict(stored_queries(load_clip(common.benchmark_checkpoint()),
                                          Path(tmp) / "many", args.stored, "dog.n.01"),
                           environment=common.environment("float32"),
                           note="shared 2-core machine: timings are noisy")
    else:
        results = run(args.depth, args.images, args.repeats, args.stored)
    common.write_json(args.out, results)  # adds the load average after the run
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
