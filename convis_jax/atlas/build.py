"""Building an atlas: every window of every image encoded once, shared over processes and devices.

Images are numbered in atlas order (the manifest's; a folder's files sorted
by their relative paths); process I of P takes every P-th of the images it
is given, starting at the I-th (`jax.distributed` tells each process its
number), and skips those already recorded, so a rerun, with any number of
processes, finishes a killed build, and a build over a grown folder appends
the new images.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


from convis_jax.atlas.store import ImageRecord, Part, claim, new_manifest, read_records
from convis_jax.core.images import list_images
from convis_jax.core.windows import STRIDE, WINDOW_SIZES, padding_mode
from convis_jax.errors import InputError


def process_share(numbers: Sequence[int], process_id: int, num_processes: int) -> list[int]:
    """A process's share of image numbers: the process_id-th, then every num_processes-th.

    Striding rather than cutting the list in blocks keeps the shares balanced when
    image sizes drift along the list (a sorted folder of folders).
    """
    return list(numbers)[process_id::num_processes]


def init_processes(*, coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None, cluster: bool = False) -> tuple[int, int]:
    """Starts `jax.distributed` when asked to; returns (this process's id, process count).

    Args:
        coordinator: HOST:PORT of process 0 (default: $JAX_COORDINATOR_ADDRESS, if set).
        num_processes, process_id: P and this process's number (default:
            $JAX_NUM_PROCESSES and $JAX_PROCESS_ID); needed with a coordinator.
        cluster: let JAX detect the cluster (Cloud TPU, SLURM, Open MPI).

    Raises:
        InputError: a coordinator without a process count or id, an id out of range, or
            a process count or id without a coordinator.
    """
    import jax

    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if cluster:
        jax.distributed.initialize()
    elif coordinator:
        count = num_processes or os.environ.get("JAX_NUM_PROCESSES")
        pid = process_id if process_id is not None else os.environ.get("JAX_PROCESS_ID")
        if count is None or pid is None:
            raise InputError(f"a coordinator ({coordinator}) needs --num-processes and "
                             f"--process-id (or JAX_NUM_PROCESSES and JAX_PROCESS_ID), found "
                             f"{count} and {pid}")
        count, pid = int(count), int(pid)
        if not 0 <= pid < count:
            raise InputError(f"expected a process id from 0 to {count - 1} (the number of "
                             f"processes less one), found {pid}")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=count,
                                   process_id=pid)
    elif num_processes not in (None, 1) or process_id not in (None, 0):
        raise InputError("--num-processes and --process-id need a --coordinator HOST:PORT "
                         "(every process must reach process 0 there)")
    return jax.process_index(), jax.process_count()


@dataclass(frozen=True)
class BuildSummary:
    """What one process's build did.

    Attributes:
        out: the atlas folder.
        process_id, num_processes: this process and how many shared the build.
        built: images this process encoded now.
        skipped: images of its share already in the atlas.
        images_per_second: built / the seconds spent on them (compilation included).
    """

    out: Path
    process_id: int
    num_processes: int
    built: int
    skipped: int
    images_per_second: float


def _listing(images) -> list[tuple[str, Path]]:
    if isinstance(images, (str, Path)):
        return list_images(images)
    listing = [(str(p), Path(p)) for p in images]
    ids = [i for i, _ in listing]
    if not listing or len(set(ids)) != len(ids):
        raise InputError(f"expected a non-empty list of distinct image paths, found "
                         f"{len(ids)} paths, {len(ids) - len(set(ids))} repeated")
    return listing


def build_atlas(images, out, *, model=None, dtype: str = "float16", padding: str = "noise",
                seed: int = 0, window_sizes: tuple[int, ...] = WINDOW_SIZES,
                stride: int = STRIDE, batch: int | None = None, chunk: int | None = None,
                progress: bool = True, source: str | None = None) -> BuildSummary:
    """Encodes every window of every image once into the atlas at `out` (this process's share).

    Call `init_processes` first when several processes share the work; each
    then calls this with the same arguments.

    Args:
        images: a folder (recursive) or list file (`list_images`), or a sequence of paths
            (each path, as given, is the image's id).
        out: the atlas folder (created; an existing atlas must have the same model, grid,
            padding, seed and dtype, and gets the images it lacks appended).
        model: a `ClipModel`, a folder or hub id, or None for the bundled model.
        dtype: the stored window embeddings: "float16" (0.75 MB an image for
            ViT-B/32) or "float32" (maps then equal `occlusion_maps` to float rounding).
        padding: "noise" (image i's from (seed, i)) or "constant".
        seed: seed of the padding noise.
        window_sizes, stride: the window grid.
        batch: images per compiled call (the last batch is filled with repeats); None:
            the device's default (`occlusion.sweep_sizes`, as `ConVis` uses: 1 on CPUs).
        chunk: windows encoded per step; None: the device's default (32 on CPUs).
        progress: show a progress bar (images/s).
        source: where `model` was loaded from, recorded for `Atlas.open` (default: `model`
            itself when it is a folder or hub id; None means the bundled model).

    Returns:
        The `BuildSummary` of this process.

    Raises:
        InputError: bad images or options, or an `out` holding another atlas.
    """
    import jax
    from tqdm.auto import tqdm

    from convis_jax.core.batches import pad_to_multiple, positive_int
    from convis_jax.core.images import load_image
    from convis_jax.core.windows import square_crop_box
    from convis_jax.kernels.sweep import Sweep
    from convis_jax.models.loading import load_clip
    from convis_jax.models.model import ClipModel
    from convis_jax.models.preprocessing import preprocess

    if dtype not in ("float16", "float32"):
        raise InputError(f"dtype must be 'float16' or 'float32', found {dtype!r}")
    padding_mode(padding)
    batch = None if batch is None else positive_int(batch, "batch")
    listing = _listing(images)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"the atlas must be a folder, found a file at {str(out)!r}")
    if source is None and not isinstance(model, ClipModel) and model is not None:
        source = str(model)
    model = model if isinstance(model, ClipModel) else load_clip(model)
    # What a window keeps here is its embedding: a row of d values where a sweep keeps T.
    sweep = Sweep.create(model.encoder, config=model.config, num_rows=model.embedding_dim,
                         window_sizes=window_sizes, stride=stride, padding=padding, seed=seed,
                         chunk=chunk, batch=batch)
    grid, batch = sweep.grid, sweep.batch
    process_id, num_processes = jax.process_index(), jax.process_count()
    sources = [str(Path(images).resolve())] if isinstance(images, (str, Path)) else []
    manifest = claim(out, new_manifest(model, grid, padding=padding, seed=seed, dtype=dtype,
                                       images=[image_id for image_id, _ in listing],
                                       sources=sources, source=source))
    number = {image_id: n for n, image_id in enumerate(manifest["images"])}
    paths = {number[image_id]: path for image_id, path in listing}
    done = read_records(out, manifest)
    share = process_share(sorted(paths), process_id, num_processes)
    todo = [n for n in share if n not in done]
    devices = jax.local_device_count()
    print(f"atlas {out}: process {process_id} of {num_processes}, {len(todo)} of its "
          f"{len(share)} images to encode on {devices} device(s)", file=sys.stderr)
    if not todo:
        return BuildSummary(out, process_id, num_processes, 0, len(share), 0.0)
    part = Part(out, process_id, n_images=len(manifest["images"]), n_windows=grid.n_windows,
                dim=model.embedding_dim, dtype=dtype)
    bar = tqdm(total=len(todo), unit="image", desc=f"atlas build (process {process_id})",
               disable=not progress)

    def whole_images(photos):
        # The whole image's pixels, prepared beside the windows in the background thread.
        return photos, pad_to_multiple(preprocess(photos, model.preprocess_config), batch)[0]

    photos_of = [lambda n=n: load_image(paths[n]) for n in todo]
    start = time.perf_counter()
    for number, (padded, n, (photos, pixels)) in enumerate(
            sweep.batches(photos_of, todo, whole_images)):
        numbers = todo[number * batch:number * batch + n]
        windows = sweep.window_embeddings(padded)
        whole = model.embed_pixel_values(pixels, batch_size=batch)
        records = []
        for n, photo in zip(numbers, photos):
            crop = square_crop_box(*photo.shape[:2])
            records.append(ImageRecord(n, manifest["images"][n], tuple(photo.shape[:2]),
                                       (crop.top, crop.left, crop.side), part.folder.name))
        part.write(records, windows[: len(numbers)], whole[: len(numbers)])
        bar.update(len(numbers))
    bar.close()
    seconds = time.perf_counter() - start
    return BuildSummary(out, process_id, num_processes, len(todo), len(share) - len(todo),
                        len(todo) / seconds)
