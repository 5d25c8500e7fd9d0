"""How far bfloat16 occlusion maps are from float32 maps, on the benchmark model.

    python benchmarks/bench_precision.py [--images 3] [--stride 32] [--out FILE]

The precision policy (README, "Precision"): `load_clip(..., dtype="bfloat16")`
runs the image encoder in bfloat16, while the window embeddings are
normalised in float32 and the similarities, ranks, subtree minima and cell
sums stay float32 / int32. This script sweeps the same images (noise
padding, the API's default) with the float32 and the bfloat16 model against
one float32 concept bank, all 7,080 concepts of `physical_objects`, and
reports `bench_occlusion.map_agreement`: the per-map correlation and how
often the arg-max cell moves. A quality measurement, not a timing one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_occlusion
import common
import numpy as np


def run(checkpoint: Path, n_images: int = 3, stride: int = 32, chunk: int = 32,
        vocabulary=None, log=print) -> dict:
    """float32 and bfloat16 cells of the same images, and their agreement.

    Args:
        checkpoint: a transformers CLIP folder.
        n_images: synthetic photos (`bench_occlusion.benchmark_images`).
        stride: the window lattice's step.
        chunk: windows per compiled step.
        vocabulary: a ConceptVocabulary; default `physical_objects()`.
        log: progress printer.

    Returns:
        {"images", "stride", "concepts", "agreement": map_agreement(...), "seconds": {...}}.
    """
    import jax.numpy as jnp

    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.core.windows import pad_images, prepare_image, window_grid
    from convis_jax.kernels import occlusion
    from convis_jax.kernels.sweep import ConceptRequest
    from convis_jax.kernels.bank import build_bank
    from convis_jax.models.loading import load_clip

    vocabulary = vocabulary or ConceptVocabulary.physical_objects()
    grid = window_grid((224, 224), (128, 64), stride)
    photos = bench_occlusion.benchmark_images(n_images)
    padded = np.concatenate([pad_images(prepare_image(p, 224)[None], grid.padding, "noise",
                                        seed=[0, n]) for n, p in enumerate(photos)])
    members, segments, k_padded = ConceptRequest.of(vocabulary).padded()
    cells, seconds, bank = {}, {}, None
    for dtype in ("float32", "bfloat16"):
        model = load_clip(checkpoint, dtype=dtype)
        if bank is None:  # one float32 bank: only the image encoder's precision differs
            bank = build_bank(model, vocabulary, cache=True, progress=False).embeddings
        start = time.perf_counter()
        cells[dtype] = np.asarray(occlusion.occlusion_cells(
            model.params, jnp.asarray(padded), jnp.asarray(bank), jnp.asarray(members),
            jnp.asarray(segments), spec=occlusion.SweepSpec.of(model.encoder, grid, chunk),
            num_concepts=k_padded))[:, :len(vocabulary)]
        seconds[dtype] = time.perf_counter() - start
        log(f"  {dtype}: {n_images} images in {seconds[dtype]:.0f} s (with compilation)")
    agreement = bench_occlusion.map_agreement(cells["float32"], cells["bfloat16"])
    return {"images": n_images, "stride": stride, "concepts": len(vocabulary),
            "agreement": agreement, "seconds_with_compilation": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or common.benchmark_checkpoint()
    result = dict(run(checkpoint, args.images, args.stride), machine=common.machine_name(),
                  environment=common.environment("float32,bfloat16"))
    out = args.out or common.RESULTS_DIR / f"{result['machine']}-precision-stride{args.stride}.json"
    common.write_json(out, result)
    print(f"wrote {out}: {result['agreement']}")
    return result


if __name__ == "__main__":
    main()
