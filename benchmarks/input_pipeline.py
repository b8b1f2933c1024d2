"""Input pipeline throughput: decode + augment + batch of real JPEG files, by output size and worker count.

    python -m benchmarks.input_pipeline                       # writes 512 CUB-sized JPEGs to a temp dir
    python -m benchmarks.input_pipeline --images DIR          # a class-per-folder tree of your own
    python -m benchmarks.input_pipeline --sizes 448 --workers 0 2 4 8 --batch 64

Workers 0 means reader threads in the main process; N > 0 means N decoding processes. The training transform is
measured with two sets of augmentations: 'paper' (random crop and flip: the presets' default, as in the three
papers) and 'all' (also rotation up to 15 degrees and brightness and colour jitter: the most work).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from PIL import Image

from configs import common
from data_pipelines import pipeline
from data_pipelines.sources.folders import ImageFolder
from data_pipelines.sources.synthetic import SyntheticBirds


def write_jpegs(root: str, count: int, classes: int = 8) -> None:
  """CUB-like files: 500x375 JPEGs (quality 90) drawn by the synthetic renderer, a folder per class."""
  src = SyntheticBirds("train", num_examples=count, resolution=500, num_classes=classes)
  for i in range(count):
    ex = src[i]
    folder = os.path.join(root, "train", f"class{ex['label']:03d}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(ex["image"][:375]).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


AUGMENTS = {"paper": {}, "all": dict(rotation=15.0, brightness=0.25, colour=0.25)}


def measure(root: str, size: int, workers: int, batch: int, steps: int, augment: str = "all") -> float:
  c = common.get_config()
  source = ImageFolder(root, "train")
  c.data.update(
    dict(
      num_classes=source.num_classes, image_size=size, resize_size=size * 8 // 7, batch_size=batch, num_workers=workers
    )
  )
  c.data.augment.update(AUGMENTS[augment])
  p = pipeline.build(c, "train", source=source)
  it = iter(p)
  # Start-up is not throughput: worker k delivers batches k, k + N, ..., so the first N batches include every
  # worker's process start (timed from the first batch, the window held the other workers' start-ups); and the
  # batches read ahead while the first arrived would be counted as made in no time. So the timing starts once
  # each worker's read-ahead has been taken, and every worker delivers at least two batches in the window.
  for _ in range(max(1, workers) * (pipeline.PREFETCH_BATCHES + 1)):
    next(it)
  steps = max(steps, 2 * workers)
  start = time.perf_counter()
  for _ in range(steps):
    next(it)
  rate = steps * batch / (time.perf_counter() - start)
  p.close()
  return rate


def main(argv=None):
  ap = argparse.ArgumentParser(
    prog="python -m benchmarks.input_pipeline",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  ap.add_argument("--images", help="class-per-folder tree (DIR/train/CLASS/*.jpg); default: write one")
  ap.add_argument("--num-images", type=int, default=512, help="files to write when --images is not given")
  ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
  ap.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0 1 2 4 ... up to the cores")
  ap.add_argument("--augment", nargs="+", default=list(AUGMENTS), choices=list(AUGMENTS))
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument(
    "--steps",
    type=int,
    default=10,
    help="batches timed per cell (at least 2 per worker), after a warm-up of each worker's read-ahead "
    f"({pipeline.PREFETCH_BATCHES} batches) plus one",
  )
  args = ap.parse_args(argv)
  for flag in ("num_images", "batch", "steps"):
    if getattr(args, flag) < 1:
      ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
  if min(args.sizes) < 1 or min(args.workers or [0]) < 0:
    ap.error("--sizes must be 1 or more and --workers 0 or more")
  if args.images and not os.path.isdir(os.path.join(args.images, "train")):
    ap.error(
      f"--images {args.images}: expected a class-per-folder tree, {os.path.join(args.images, 'train')}/CLASS/"
      "*.jpg (leave --images out to write one)"
    )
  cores = os.cpu_count() or 1
  workers = args.workers or [0] + [w for w in (1, 2, 4, 8, 16, 32) if w <= cores]
  with tempfile.TemporaryDirectory() as tmp:
    root = args.images
    if root is None:
      root = tmp
      print(f"writing {args.num_images} JPEG files (500x375) to {tmp} ...", flush=True)
      write_jpegs(tmp, args.num_images)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {cores} cores; batch {args.batch}")
    heads = [f"{w} worker{'s' if w > 1 else ''}" if w else "threads" for w in workers]
    print("| output | augment | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(workers))
    for size in args.sizes:
      for augment in args.augment:
        rates = [measure(root, size, w, args.batch, args.steps, augment) for w in workers]
        print(f"| {size} | {augment} | " + " | ".join(f"{r:.0f} img/s" for r in rates) + " |", flush=True)


if __name__ == "__main__":
  main()
