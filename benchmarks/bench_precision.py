"""bfloat16 against float32: how far the maps move, and how fast each sweep runs beside PyTorch.

    python benchmarks/bench_precision.py [--images 3] [--stride 16] [--repeats 3] [--quick]

The precision policy (`convis_jax/models/precision.py`, docs/guides/precision.md):
under bfloat16 every product of the towers takes bfloat16 operands and
returns float32; everything after the encoder (similarities, ranks, subtree
minima, cells) is float32. On the random ViT-B/32-shaped checkpoint
(`common.benchmark_checkpoint`), with all 7,080 concepts of
`physical_objects`, this script measures:

* agreement: the maps of rendered scenes (`convis_jax.scenes`, not noise),
  `ConVis` in bfloat16 (its bank built by the bfloat16 text tower: what a
  user gets) against `ConVis` in float32, per map (`bench_occlusion.
  map_agreement`): correlation median and 10th percentile, and how often the
  peak cell moves; and the same with the bfloat16 image tower against the
  float32 bank (the image tower's share);
* speed, in interleaved rounds in one process: the all-concept sweep of one
  image (`ConVis.occlusion_cells`) in our bfloat16 and our float32, against
  PyTorch's bare encoding of the same crops (`torch_reference.
  encode_pixels`: the crops already cut, resized and normalised) in bfloat16
  (bf16 weights, or float32 weights under `torch.autocast`) and in float32,
  each on 1 thread and on all cores; the fastest of each precision is the
  peer. The ratios ours bf16 / PyTorch bf16 and ours bf16 / ours f32 are
  reported with the CPU's model and flags.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_occlusion
import common
import numpy as np
import torch_reference


@dataclass(frozen=True)
class Settings:
    """What one run measures.

    Attributes:
        images: rendered scenes of the agreement measurement.
        stride: window lattice step (16: the paper's 730 windows an image).
        repeats: timed rounds of each contender.
        torch_chunk: PyTorch crops per forward batch.
        timing: time the sweeps and PyTorch (False: agreement only).
        agreement: compare the maps (False: timings only).
    """

    images: int = 3
    stride: int = 16
    repeats: int = 3
    torch_chunk: int = 64
    timing: bool = True
    agreement: bool = True


FULL = Settings()
QUICK = Settings(images=1, stride=32, repeats=1)

# Acceptance (issue 29): the bfloat16 maps follow the float32 ones, and on a CPU with
# bfloat16 units the bfloat16 sweep beats PyTorch's bfloat16 bare encoding and takes at
# most 0.6x our float32 sweep.
CORRELATION_MEDIAN = 0.999
CORRELATION_P10 = 0.99
TORCH_RATIO = 1.0
FLOAT32_RATIO = 0.6


def cpu_description() -> dict:
    """The CPU's model name and its bfloat16 unit flags (Linux), for the result file."""
    from convis_jax.models.precision import cpu_bf16_flags

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"model": model, "bf16_flags": list(cpu_bf16_flags()), "cores": os.cpu_count()}


def scenes(count: int, size: int = 224) -> list[np.ndarray]:
    """Rendered scenes of 2 to 4 drawn objects on textured backgrounds, uint8 [size, size, 3]."""
    from convis_jax.scenes import render_scene

    return [render_scene(seed, size=size, n_objects=(2, 4)).image for seed in range(count)]


def agreement(convis: dict, photos, stride: int, log=print) -> dict:
    """bfloat16 maps against float32 maps, the full bfloat16 path and the image tower alone.

    Args:
        convis: dtype name -> ConVis of that precision (same checkpoint and vocabulary).
        photos: the scenes.
        stride: window lattice step.

    Returns:
        {"bfloat16": map_agreement of ConVis bf16 vs f32, "bfloat16_image_tower": the
        bf16 model's sweep against the float32 bank vs f32}.
    """
    import jax.numpy as jnp

    from convis_jax.kernels.sweep import ConceptRequest, Sweep

    cells = {dtype: c.occlusion_cells(photos, padding="noise", seed=0, stride=stride)
             for dtype, c in convis.items()}
    full = bench_occlusion.map_agreement(cells["float32"], cells["bfloat16"])
    log(f"  agreement, bfloat16 (its own bank): {full}")
    # The bfloat16 image tower with the float32 bank, through the sweep ConVis runs.
    low, high = convis["bfloat16"], convis["float32"]
    sweep = Sweep.create(low.encoder, num_rows=len(high.vocabulary), config=low.model.config,
                         stride=stride, padding="noise", seed=0)
    request, bank = ConceptRequest.of(high.vocabulary), jnp.asarray(high.bank.embeddings)
    sources = [lambda photo=photo: photo for photo in photos]
    tower = [sweep.cells(padded, bank, request)[:n]
             for padded, n, _ in sweep.batches(sources, list(range(len(photos))))]
    image_tower = bench_occlusion.map_agreement(cells["float32"], np.concatenate(tower))
    log(f"  agreement, bfloat16 image tower, float32 bank: {image_tower}")
    return {"bfloat16": full, "bfloat16_image_tower": image_tower}


def torch_contenders(checkpoint: Path, photo: np.ndarray, stride: int, chunk: int,
                     preprocessing: dict) -> dict:
    """name -> zero-argument callable: PyTorch's bare encoding of one image's sweep crops,
    in float32, bfloat16 weights, and float32 weights under autocast to bfloat16, each on
    1 thread and on all cores (`TORCH_FORMS`: on a shared machine either can be faster,
    and the load changes between rounds, so both run in every round)."""
    import torch

    from convis_jax.core.windows import pad_images, prepare_image, window_grid

    grid = window_grid((224, 224), (128, 64), stride)
    padded = pad_images(prepare_image(photo, 224)[None], grid.padding, "noise", seed=[0, 0])[0]
    windows = torch_reference.sweep_windows(224, (128, 64), stride, grid.padding)
    pixels = torch.from_numpy(torch_reference.window_pixel_values(padded, windows,
                                                                  **preprocessing))
    full = torch_reference.torch_model_of(checkpoint, "float32", device="cpu")
    half = torch_reference.torch_model_of(checkpoint, "bfloat16", device="cpu")
    inputs = {"float32": (full, pixels, False),
              "bfloat16 weights": (half, pixels.bfloat16(), False),
              "autocast bfloat16": (full, pixels, True)}

    def encode(model, x, autocast, threads):
        def run():
            torch.set_num_threads(threads)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return torch_reference.encode_pixels(model, x, chunk).float().numpy()
        return run

    return {torch_name(form, threads): encode(*inputs[form], threads)
            for form in TORCH_FORMS for threads in sorted({1, os.cpu_count() or 1})}


TORCH_FORMS = ("float32", "bfloat16 weights", "autocast bfloat16")


def torch_name(form: str, threads: int) -> str:
    return f"PyTorch {form} bare encoding, {threads} thread{'s' if threads > 1 else ''}"


def fastest(median: dict, forms) -> str:
    """The name of the PyTorch contender of `forms` with the smallest median."""
    names = [n for n in median if any(n.startswith(f"PyTorch {form} bare") for form in forms)]
    return min(names, key=median.get)


def run(checkpoint: Path, settings: Settings = FULL, *, vocabulary=None, log=print) -> dict:
    """Agreement and (with settings.timing) interleaved timings; see the module docstring.

    Returns:
        {"settings", "cpu", "precision_auto", "concepts", "agreement", "timings",
         "ratios", "targets"}.
    """
    from convis_jax.api import ConVis
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.models.loading import load_clip
    from convis_jax.models.precision import device_precision

    vocabulary = vocabulary or ConceptVocabulary.physical_objects()
    photos = scenes(settings.images)
    convis = {}
    for dtype in ("float32", "bfloat16"):
        model = load_clip(checkpoint, dtype=dtype)
        convis[dtype] = ConVis(model, vocabulary, progress=False)
        log(f"  {dtype}: model and bank of {len(vocabulary)} concepts ready ({model.precision})")
    result = {"settings": asdict(settings), "cpu": cpu_description(),
              "precision_auto": str(device_precision()), "concepts": len(vocabulary),
              "targets": []}
    if settings.agreement:
        result["agreement"] = agreement(convis, photos, settings.stride, log)
        result["targets"] += [
            common.target("bfloat16 maps: correlation median vs float32",
                          result["agreement"]["bfloat16"]["correlation_median"], ">=",
                          CORRELATION_MEDIAN),
            common.target("bfloat16 maps: correlation 10th percentile vs float32",
                          result["agreement"]["bfloat16"]["correlation_p10"], ">=",
                          CORRELATION_P10)]
    if not settings.timing:
        return result

    photo = photos[0]
    pre = convis["float32"].model.preprocess_config
    preprocessing = {"size": convis["float32"].model.image_size,
                     "mean": tuple(pre.image_mean), "std": tuple(pre.image_std)}
    functions = {
        f"convis_jax {dtype} sweep, all concepts": (
            lambda c=c: c.occlusion_cells(photo, padding="noise", seed=0,
                                          stride=settings.stride))
        for dtype, c in convis.items()}
    functions.update(torch_contenders(checkpoint, photo, settings.stride, settings.torch_chunk,
                                      preprocessing))
    timings, _ = common.measure(functions, settings.repeats, log)
    median = {name: t.median_s for name, t in timings.items()}
    ours_bf16 = median["convis_jax bfloat16 sweep, all concepts"]
    ours_f32 = median["convis_jax float32 sweep, all concepts"]
    # The peers: PyTorch's fastest form of each precision, by median.
    torch_bf16, torch_f32 = fastest(median, TORCH_FORMS[1:]), fastest(median, TORCH_FORMS[:1])
    ratios = {"ours_bf16_over_torch_bf16_bare": ours_bf16 / median[torch_bf16],
              "ours_bf16_over_ours_f32": ours_bf16 / ours_f32,
              "ours_f32_over_torch_f32_bare": ours_f32 / median[torch_f32],
              "torch_bf16_peer": torch_bf16, "torch_f32_peer": torch_f32}
    result.update(timings={name: t.to_dict() for name, t in timings.items()}, ratios=ratios,
                  windows=len(torch_reference.sweep_windows(
                      224, (128, 64), settings.stride, 128)))
    result["targets"] += [
        common.target("bfloat16 sweep / PyTorch bfloat16 bare encoding",
                      ratios["ours_bf16_over_torch_bf16_bare"], "<=", TORCH_RATIO, "x"),
        common.target("bfloat16 sweep / float32 sweep", ratios["ours_bf16_over_ours_f32"],
                      "<=", FLOAT32_RATIO, "x")]
    for name, seconds in median.items():
        log(f"  {name}: {seconds:.2f} s")
    log(f"  ratios: {ratios}")
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="1 image, stride 32, 1 round")
    parser.add_argument("--no-timing", action="store_true", help="agreement only")
    parser.add_argument("--no-agreement", action="store_true", help="timings only")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    for key in ("images", "stride", "repeats"):
        if getattr(args, key) is not None:
            settings = replace(settings, **{key: getattr(args, key)})
    if args.no_timing or args.no_agreement:
        settings = replace(settings, timing=not args.no_timing,
                           agreement=not args.no_agreement)
    checkpoint = args.checkpoint or common.benchmark_checkpoint()
    environment = common.environment("float32,bfloat16")  # the load average before the run
    result = dict(run(checkpoint, settings), machine=common.machine_name(),
                  environment=environment)
    suffix = "-quick" if args.quick else "-timing" if args.no_agreement else ""
    out = args.out or common.RESULTS_DIR / f"{result['machine']}-precision{suffix}.json"
    common.write_json(out, result)
    for t in result["targets"]:
        print(f"  {'met ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.4g} "
              f"(target {t['op']} {t['threshold']:g})")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
