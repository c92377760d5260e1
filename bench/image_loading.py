"""Throughput of the trainer's image input pipeline against raw decoding in as many processes.

Usage (from the repository root)::

    .venv/bin/python bench/image_loading.py [--images 2000] [--workers 2] [--rounds 3]

Writes ``--images`` JPEGs of ``--source-size`` pixels (random blocks of colour, 10
classes) to a temporary ImageFolder and reads them as the trainer does: a
:class:`~bclviz.data.lazy.LazyImages` resizing to ``--image-size``, the epoch's batches
drawn by the trainer's seeded shuffle, loaded by :class:`bclviz.loader.BatchLoader`
with ``--workers`` worker processes (no model: the loop only receives the batches).

The baseline is the raw work on the same files with the same number of processes: a
``multiprocessing.Pool(W)`` mapping PIL open + convert("RGB") + resize + to-tensor (the
transform LazyImages applies) over the file list, returning only a checksum, so it pays
no batching and no transfer of pixels. Both sides start their processes and read every
file once before timing (the page cache is warm for both); then ``--rounds`` rounds time
one epoch of each, alternating, and the medians give ``pipeline_images_per_s`` and
``raw_images_per_s``. ``ratio`` = pipeline / raw; the target is >= 0.9.
``pipeline_first_epoch_seconds`` is the untimed first epoch, worker start included;
``inline_images_per_s`` is ``workers=0`` (decoding in the training process, with
LazyImages' decoding threads: the trainer before worker processes), for reference.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, set_threads  # noqa: E402

from bclviz.data.formats import default_transform, load_image_folder  # noqa: E402
from bclviz.data.lazy import LazyImages  # noqa: E402
from bclviz.loader import BatchLoader  # noqa: E402

TARGET = 0.9
_TRANSFORM = None


def write_images(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % classes
        base = np.random.default_rng(c).integers(0, 256, 3)
        pixels = np.clip(base + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        r, q = rng.integers(0, size - size // 4, 2)
        pixels[r : r + size // 4, q : q + size // 4] = 255 - base
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", "JPEG", quality=90)


def _init_raw(image_size: int) -> None:
    global _TRANSFORM
    torch.set_num_threads(1)
    _TRANSFORM = default_transform(image_size)


def _decode(path: str) -> float:
    from PIL import Image

    with Image.open(path) as image:
        return float(_TRANSFORM(image.convert("RGB")).sum())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--source-size", type=int, default=64, help="pixels of the JPEGs written")
    parser.add_argument("--image-size", type=int, default=32, help="pixels after the resize")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on both sides (>= 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prefetch-factor", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.images < 1 or args.rounds < 1:
        parser.error("--workers, --images and --rounds must be >= 1")

    set_threads(1)  # the training process only receives batches here
    with tempfile.TemporaryDirectory(prefix="bclviz-bench-images-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_images(root, args.images, args.source_size, seed=args.seed)
        write_seconds = time.perf_counter() - t0
        images = load_image_folder(root)
        files = [str(p) for p in images.paths]
        x = LazyImages(images, image_size=args.image_size)
        y = torch.tensor(list(images.labels), dtype=torch.int64)
        shuffle = torch.Generator().manual_seed(args.seed)

        def epoch_batches():  # the trainer's seeded shuffle (bclviz.train._Loop.epochs)
            return list(torch.randperm(len(y), generator=shuffle).split(args.batch_size))

        loader = BatchLoader(x, y, workers=args.workers, prefetch_factor=args.prefetch_factor, seed=args.seed)
        pool = multiprocessing.get_context("fork").Pool(args.workers, initializer=_init_raw,
                                                         initargs=(args.image_size,))
        chunk = max(1, len(files) // (4 * args.workers))
        try:
            t0 = time.perf_counter()
            seen = sum(len(xb) for xb, _ in loader.epoch(epoch_batches()))  # starts the workers
            first_epoch = time.perf_counter() - t0
            assert seen == len(files)
            pool.map(_decode, files, chunksize=chunk)  # warm the pool and the page cache alike
            inline = BatchLoader(x, y, workers=0)  # decoding in the training process, as before
            pipe_rates, raw_rates, inline_rates = [], [], []
            for _ in range(args.rounds):
                batches = epoch_batches()
                t0 = time.perf_counter()
                n = 0
                for xb, yb in loader.epoch(batches):
                    n += xb.shape[0]
                pipe_rates.append(n / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                sums = pool.map(_decode, files, chunksize=chunk)
                raw_rates.append(len(sums) / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                n = sum(xb.shape[0] for xb, _ in inline.epoch(batches))
                inline_rates.append(n / (time.perf_counter() - t0))
        finally:
            loader.close()
            pool.close()
            pool.join()

    pipeline, raw = statistics.median(pipe_rates), statistics.median(raw_rates)
    ratio = pipeline / raw
    return {
        "benchmark": "image_loading",
        "images": args.images, "source_size": args.source_size, "image_size": args.image_size,
        "workers": args.workers, "batch_size": args.batch_size, "prefetch_factor": args.prefetch_factor,
        "rounds": args.rounds,
        "pipeline_images_per_s": round(pipeline, 1), "raw_images_per_s": round(raw, 1),
        "ratio": round(ratio, 3), "target_ratio": TARGET, "meets_target": ratio >= TARGET,
        "inline_images_per_s": round(statistics.median(inline_rates), 1),
        "pipeline_rates": [round(r, 1) for r in pipe_rates], "raw_rates": [round(r, 1) for r in raw_rates],
        "pipeline_first_epoch_seconds": round(first_epoch, 3), "write_seconds": round(write_seconds, 3),
        "environment": environment(),
    }


if __name__ == "__main__":
    emit(main())
