"""Concept maps for a whole image collection, split over processes (hosts) and devices.

    python -m scripts.sweep_dataset sweep IMAGES --out DIR [--model M] [--vocabulary V]
        [--concepts dog.n.01,bird] [--method occlusion|gradient] [--batch B]
        [--coordinator HOST:PORT --num-processes P --process-id I | --cluster]
    python -m scripts.sweep_dataset merge DIR [--output FILE]

(from the repository root; `python scripts/sweep_dataset.py` works as well once
convis_jax is installed).

IMAGES is a folder (searched recursively for image files) or a text file
listing image paths, one a line (relative paths are relative to the file).
Images are numbered in sorted order; process I of P takes images I, I + P,
I + 2P, ... (`jax.distributed` tells each process its number). Within a
process every batch goes through the API (`ConVis.occlusion_cells` or
`ConVis.gradient_maps`), whose sweeps use every local device: the windows of
the occlusion sweep, or the images of the gradient sweep, are split over them.

Layout of DIR:
    sweep.json                the settings and the image list; a rerun must match it
    process-I/NNNNNNN.npz     `maps` of image NNNNNNN: float32 [K, cy, cx] occlusion cells
                              (14 x 14 for the default windows)
                              or [K, S, S] gradient maps (S: the model's input size)
    process-I/manifest.jsonl  one line per finished image, written after its file
A rerun (with any number of processes) skips the images that some manifest
lists and whose file exists. `merge` checks that every image is done and
writes DIR/merged.npz: maps [N, K, ...], images [N] (ids), concepts [K],
settings (JSON).

Distributed runs, three ways:
    --coordinator HOST:PORT --num-processes P --process-id I   (every process)
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID  (the same, as variables)
    --cluster   (Cloud TPU, SLURM, Open MPI: JAX finds everything itself)
See docs/scaling.md. User mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from convis_jax.cli import script_main
from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import InputError
from convis_jax.evaluation.datasets import IMAGE_SUFFIXES

SETTINGS_FILE = "sweep.json"
MANIFEST = "manifest.jsonl"
MERGED = "merged.npz"
# The output layout's version; a rerun refuses a folder written with another.
LAYOUT_VERSION = 1


# ----------------------------------------------------------------------------- image lists


def list_images(source: str | Path) -> list[tuple[str, Path]]:
    """The images of a folder (recursive) or of a list file, as sorted (id, path) pairs.

    Args:
        source: a folder, whose image files (suffixes `IMAGE_SUFFIXES`, any case, no
            hidden entries) are taken with their "/"-separated paths relative to it as
            ids; or a text file with one image path a line (blank lines and lines
            starting with "#" skipped; relative paths are relative to the file's
            folder), each line being the image's id.

    Returns:
        (id, path) pairs sorted by id, ids unique.

    Raises:
        InputError: no such folder or file, no images, or an id listed twice.
    """
    source = Path(source)
    if source.is_dir():
        found = [(p.relative_to(source).as_posix(), p) for p in source.rglob("*")
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith(".") for part in p.relative_to(source).parts)]
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        found = [(line, source.parent / line) for line in lines
                 if line and not line.startswith("#")]
        ids = [image_id for image_id, _ in found]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise InputError(f"expected every image once in {str(source)!r}, found "
                             f"{twice[:3]} listed more than once")
    else:
        raise InputError(f"expected a folder of images or a list file, found no such path "
                         f"{str(source)!r}")
    if not found:
        raise InputError(f"expected images ({', '.join(IMAGE_SUFFIXES)}) in {str(source)!r}, "
                         f"found none")
    return sorted(found)


def process_share(n_images: int, process_id: int, num_processes: int) -> list[int]:
    """The image numbers a process sweeps: process_id, process_id + P, ... (P processes).

    Striding rather than cutting the list in blocks keeps the shares balanced when
    image sizes drift along the list (a sorted folder of folders).
    """
    return list(range(process_id, n_images, num_processes))


# ----------------------------------------------------------------------------- output folder


def image_file(process_id: int, index: int) -> str:
    """Where image `index`'s maps go, relative to the output folder."""
    return f"process-{process_id}/{index:07d}.npz"


def read_settings(out: Path) -> dict | None:
    """The sweep.json of an output folder, or None when it has none."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"expected a sweep settings file at {str(path)!r}, found invalid JSON "
                         f"({err})") from None


def claim_folder(out: Path, record: dict) -> None:
    """Writes the sweep's settings and image list to `out`, or checks that they match.

    Every process calls this. Their records agree on everything compared
    (layout, settings, images; the model path, kept for information, may differ
    between hosts), and writes are atomic, so whichever lands last will do.

    Args:
        out: the output folder.
        record: {"layout": LAYOUT_VERSION, "settings": {...}, "images": [ids], ...}.

    Raises:
        InputError: the folder holds a sweep with other settings or images.
    """
    found = read_settings(out)
    if found is None:
        atomic_write_bytes(out / SETTINGS_FILE, json.dumps(record, indent=1).encode())
        return
    for key in ("layout", "settings", "images"):
        if found.get(key) != record[key]:
            what = "image list" if key == "images" else key
            raise InputError(f"{str(out)!r} holds a sweep with another {what}; use a new --out "
                             f"folder (or delete that one) to start this sweep")


def done_images(out: Path) -> dict[int, str]:
    """{image number: its maps file} of every image some manifest lists and whose file exists.

    A manifest line cut short by a crash is ignored (that image is simply swept again).
    """
    done = {}
    for manifest in sorted(out.glob(f"process-*/{MANIFEST}")):
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (out / entry["file"]).is_file():
                done[int(entry["index"])] = entry["file"]
    return done


def write_maps(out: Path, process_id: int, index: int, image_id: str, maps: np.ndarray) -> None:
    """Saves one image's maps, then records it in this process's manifest."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, maps=np.asarray(maps, np.float32))
    name = image_file(process_id, index)
    atomic_write_bytes(out / name, buffer.getvalue())
    with open(out / f"process-{process_id}" / MANIFEST, "a", encoding="utf-8") as manifest:
        manifest.write(json.dumps({"index": index, "image": image_id, "file": name}) + "\n")


def merge(out: str | Path, output: str | Path | None = None) -> Path:
    """Joins every process's per-image maps into one .npz, in image order.

    The maps are streamed into the archive one image at a time, so a sweep larger
    than memory still merges.

    Args:
        out: the sweep's output folder.
        output: the merged file (default out/merged.npz).

    Returns:
        The merged file: maps float32 [N, K, ...], images [N] (ids), concepts [K],
        settings (the sweep's settings as JSON).

    Raises:
        InputError: not a sweep folder, or images not done yet (rerun the sweep).
    """
    out = Path(out)
    record = read_settings(out)
    if record is None:
        raise InputError(f"expected a sweep folder with {SETTINGS_FILE}, found none in "
                         f"{str(out)!r}")
    images = record["images"]
    done = done_images(out)
    missing = [i for i in range(len(images)) if i not in done]
    if missing:
        raise InputError(f"expected all {len(images)} images swept, found {len(missing)} not "
                         f"done (first: {images[missing[0]]!r}); run the sweep again to "
                         f"finish them, then merge")
    first = np.load(out / done[0])["maps"]
    output = Path(output) if output is not None else out / MERGED
    tmp = output.with_name(f".{output.name}.tmp")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (len(images),) + first.shape}
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        with archive.open("maps.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            for i in range(len(images)):
                maps = np.load(out / done[i])["maps"]
                if maps.shape != first.shape:
                    raise InputError(f"expected maps of shape {first.shape} for every image, "
                                     f"found {maps.shape} in {done[i]}")
                member.write(np.ascontiguousarray(maps, np.float32).tobytes())
        for name, value in (("images", np.array(images)),
                            ("concepts", np.array(record["settings"]["concepts"])),
                            ("settings", np.array(json.dumps(record["settings"])))):
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    os.replace(tmp, output)
    return output


# ----------------------------------------------------------------------------- sweeping


def init_processes(args) -> tuple[int, int]:
    """Starts `jax.distributed` when asked to; returns (this process's id, process count)."""
    import jax

    coordinator = args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if args.cluster:
        jax.distributed.initialize()
    elif coordinator:
        count = args.num_processes or os.environ.get("JAX_NUM_PROCESSES")
        pid = args.process_id if args.process_id is not None else os.environ.get("JAX_PROCESS_ID")
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
    elif args.num_processes not in (None, 1) or args.process_id not in (None, 0):
        raise InputError("--num-processes and --process-id need a --coordinator HOST:PORT "
                         "(every process must reach process 0 there)")
    return jax.process_index(), jax.process_count()


def _settings(args, model, convis, names) -> dict:
    # The model by its weights' fingerprint, not its path, which may differ between hosts.
    common = dict(model_fingerprint=model.fingerprint,
                  dtype=args.dtype, vocabulary=convis.vocabulary.fingerprint(), text=args.text,
                  concepts=names, method=args.method, seed=args.seed)
    if args.method == "occlusion":
        return dict(common, padding=args.padding, aggregation=args.aggregation,
                    window_sizes=list(args.window_sizes), stride=args.stride)
    return dict(common, score=args.score, kind=args.kind, reduce=args.reduce,
                strategy=args.strategy, layer=args.layer, smoothgrad_samples=args.samples,
                smoothgrad_sigma=args.sigma)


def _sweep_batch(args, convis, concepts, batch: int):
    """A function (image numbers, photos) -> maps [B, K, ...] of one batch, through the API.

    The API draws each image's noise (padding or SmoothGrad) from (seed, image number),
    so the maps do not depend on how the images are shared out or batched.
    """
    if args.method == "occlusion":
        options = dict(padding=args.padding, aggregation=args.aggregation,
                       window_sizes=tuple(args.window_sizes), stride=args.stride,
                       chunk=args.chunk)
        run = convis.occlusion_cells
    else:
        options = dict(score=args.score, kind=args.kind,
                       reduce=None if args.reduce == "none" else args.reduce,
                       strategy=args.strategy, chunk=args.chunk, layer=args.layer,
                       smoothgrad_samples=args.samples, smoothgrad_sigma=args.sigma)
        run = convis.gradient_maps
    return lambda numbers, photos: run(photos, concepts, seed=args.seed, batch=batch,
                                       image_numbers=numbers, **options)


def sweep(args) -> None:
    """The `sweep` command: this process's share of the images, resuming."""
    import jax
    from tqdm.auto import tqdm

    from convis_jax.api import ConVis
    from convis_jax.core.batches import prefetched
    from convis_jax.core.images import load_image
    from convis_jax.jax_backend.loading import load_clip

    process_id, num_processes = init_processes(args)  # before any other JAX work
    images = list_images(args.images)
    out = Path(args.out)
    model = load_clip(args.model, dtype=args.dtype)
    convis = ConVis(model, args.vocabulary, text=args.text, progress=not args.quiet)
    vocab = convis.vocabulary
    names = list(vocab.names) if args.concepts is None else vocab.resolve(
        [c.strip() for c in args.concepts.split(",") if c.strip()])
    claim_folder(out, dict(layout=LAYOUT_VERSION, model=str(args.model),
                           settings=_settings(args, model, convis, names),
                           images=[image_id for image_id, _ in images]))
    done = done_images(out)
    todo = [i for i in process_share(len(images), process_id, num_processes) if i not in done]
    devices = jax.local_device_count()
    print(f"process {process_id} of {num_processes}: {len(todo)} images to do on {devices} "
          f"device(s), {len(names)} concepts", file=sys.stderr)
    if not todo:
        return
    batch = args.batch or max(8, devices)
    # Every concept: None spares resolving the whole vocabulary again per batch.
    step = _sweep_batch(args, convis, None if args.concepts is None else names, batch)
    (out / f"process-{process_id}").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), unit="image", disable=args.quiet)
    parts = [todo[start:start + batch] for start in range(0, len(todo), batch)]
    # The next batch's files are decoded in a background thread while this one is swept.
    decoded = prefetched(lambda b: [load_image(images[i][1]) for i in parts[b]], len(parts))
    for numbers, photos in zip(parts, decoded):
        # A short last batch is filled up to `batch` images by the API (one compiled shape).
        maps = step(numbers, photos)
        for number, image_maps in zip(numbers, maps):
            write_maps(out, process_id, number, images[number][0], image_maps)
        bar.update(len(numbers))
    bar.close()


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    # The convis-jax command line's parser (its mistakes are one-line ConvisErrors) and
    # its model options, so that both spell them alike.
    from convis_jax.cli import (
        POSITIVE_FLOAT,
        POSITIVE_INT,
        SEED,
        OneLineParser,
        add_gradient_options,
        add_model_options,
    )

    parser = OneLineParser(prog="sweep_dataset", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = commands.add_parser("sweep", help="sweep this process's share of the images")
    run.add_argument("images", help="a folder of images (recursive) or a list file")
    run.add_argument("--out", required=True, help="output folder (shared by all processes)")
    add_model_options(run)
    run.add_argument("--concepts", default=None,
                     help="comma-separated synsets or words (default: every concept)")
    run.add_argument("--method", choices=["occlusion", "gradient"], default="occlusion")
    run.add_argument("--seed", type=SEED, default=0,
                     help="seed of the padding noise (occlusion) or SmoothGrad, per image")
    run.add_argument("--chunk", type=POSITIVE_INT, default=None,
                     help="windows (occlusion) or concepts (gradient) per compiled step "
                          "(default: the library's choice for the device and the request)")
    run.add_argument("--batch", type=POSITIVE_INT, default=None,
                     help="images per call (default: 8, or the local device count if larger)")
    occlusion = run.add_argument_group("occlusion")
    occlusion.add_argument("--padding", choices=["noise", "constant"], default="noise")
    occlusion.add_argument("--aggregation", choices=["window", "webapp"], default="window")
    occlusion.add_argument("--window-sizes", type=_int_list, default=(128, 64),
                           help="comma-separated window sides (default 128,64)")
    occlusion.add_argument("--stride", type=POSITIVE_INT, default=16)
    gradient = run.add_argument_group("gradient")
    add_gradient_options(gradient)
    gradient.add_argument("--reduce", default="absmax", choices=["absmax", "l2", "none"],
                          help="channel reduction (none keeps [K, 3, S, S] maps)")
    gradient.add_argument("--layer", type=int, default=None, help="vision layer of token maps")
    gradient.add_argument("--samples", type=POSITIVE_INT, default=16,
                          help="SmoothGrad's noisy copies")
    gradient.add_argument("--sigma", type=POSITIVE_FLOAT, default=0.15,
                          help="SmoothGrad's noise level")
    hosts = run.add_argument_group("processes (jax.distributed; see docs/scaling.md)")
    hosts.add_argument("--coordinator", default=None,
                       help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    hosts.add_argument("--num-processes", type=POSITIVE_INT, default=None,
                       help="how many processes share the images (or JAX_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int, default=None,
                       help="this process's number, 0 to P - 1 (or JAX_PROCESS_ID)")
    hosts.add_argument("--cluster", action="store_true",
                       help="let JAX detect the cluster (Cloud TPU, SLURM, Open MPI)")
    joined = commands.add_parser("merge", help="join every process's maps into one .npz")
    joined.add_argument("out", help="the sweep's output folder")
    joined.add_argument("--output", default=None, help="merged file (default: OUT/merged.npz)")
    return parser


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found "
                                         f"{text!r}") from None


def main(argv=None) -> int:
    def run(args):
        if args.command == "merge":
            print(merge(args.out, args.output))
        else:
            sweep(args)

    return script_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
