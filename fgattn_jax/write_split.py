"""Write a data set's split out as a folder tree, so that it is fixed and can be shared:

    python -m fgattn_jax.write_split --config configs/baseline.py[:preset] [--config.KEY=VALUE ...] --out DIR
                                         [--copy]

e.g. the 1000 largest landmarks of a partial Google Landmarks v2 download, 80/10/10:

    python -m fgattn_jax.write_split --config configs/baseline.py --config.data.source=folder \\
        --config.data.name=landmarks --config.data.root=/data/gldv2 --config.data.top_classes=1000 --out /data/gld1k

The configured data set is opened as training opens it (data.split and data.top_classes included) for its train,
val and test splits (a split the data set does not have, or an empty one, is left out), and written as

    DIR/<split>/<class>/<file>   a symbolic link to each image (a copy of it with --copy)
    DIR/split.csv                split,label,class_name,path (path relative to data.root where it lies inside it)

DIR is the 'folder' layout: --config.data.source=folder --config.data.name=folder --config.data.root=DIR reads back
the same images in each split with the same labels, whatever images are later added to the original download.
Class folders are the class names made safe as file names ('/' and leading dots replaced); where these would not
sort in label order (the folder layout numbers classes by sorted folder name) or would clash, each starts with its
zero-padded label: '007.Name'. Boxes and part points are not written (the folder layout has none). Only the folder
layouts (data.source=folder) have image files to write: not the synthetic or TFDS data sets. DIR must be new or
empty: an existing folder is never written into; the tree appears there complete or not at all.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import sys

from fgattn_jax import cli

SPLITS = ("train", "val", "test")


def safe_name(name: str) -> str:
  """A class name as a folder name: no path separators or NUL, no leading dot (hidden: the folder layout skips it),
  not the macOS archive leftover, at most 200 bytes."""
  name = re.sub(r"[/\\\0]", "_", str(name))
  name = re.sub(r"^\.+", lambda m: "_" * len(m.group()), name)
  name = name.encode()[:200].decode("utf-8", "ignore")
  return "_" + name if name in ("", "__MACOSX") else name


def class_folders(class_names) -> list[str]:
  """The folder of each class, in label order: safe_name, or with the label in front where the safe names would not
  sort in label order or would clash (label k must be the k-th folder in sorted order when the tree is read back)."""
  safe = [safe_name(n) for n in class_names]
  if all(a < b for a, b in zip(safe, safe[1:])) and len({s.lower() for s in safe}) == len(safe):
    return safe  # (case-insensitive clashes too: on macOS 'Oak' and 'oak' would be one folder)
  width = max(3, len(str(len(safe) - 1)))
  return [f"{k:0{width}d}.{s}" for k, s in enumerate(safe)]


def _file_name(path: str, used: set) -> str:
  """The name of `path`'s link or copy in its class folder: its own, visible, with an image extension, unique there."""
  from data_pipelines.sources.folders import IMAGE_EXTENSIONS

  name = re.sub(r"^\.+", lambda m: "_" * len(m.group()), os.path.basename(path))
  stem, ext = os.path.splitext(name)
  if ext.lower() not in IMAGE_EXTENSIONS:  # the folder layout reads only these; the decoder reads the content
    stem, ext = name, ".jpg"
  name, k = stem + ext, 1
  while name.lower() in used:  # the same file name from two folders of one class
    name, k = f"{stem}_{k}{ext}", k + 1
  used.add(name.lower())
  return name


def _absent(error: Exception) -> bool:
  """A split the data set does not have ('unknown split') or that is empty (a fraction of 0): left out."""
  return "unknown split" in str(error) or "is empty" in str(error)


def open_splits(cfg) -> tuple[dict, dict]:
  """({split: source} for the splits the configured data set has, {split: why it is left out})."""
  from data_pipelines import pipeline
  from data_pipelines.sources.base import DataError

  sources, left_out = {}, {}
  for split in SPLITS:
    try:
      sources[split] = pipeline.open_source(cfg, split)
    except DataError as e:
      if split == "train" or not _absent(e):
        raise
      left_out[split] = str(e).splitlines()[0]
  for split, src in sources.items():
    if not hasattr(src, "path"):
      raise DataError(f"{src.name}: its examples are not image files, so its split cannot be written")
    if list(src.class_names) != list(sources["train"].class_names):
      raise DataError(f"{src.name}: the {split} split's classes differ from the train split's: cannot write one tree")
  names = sources["train"].class_names
  seen = set().union(*(set(src.labels.tolist()) for src in sources.values()))
  if len(seen) < len(names):  # read back, the classes after it would move down one label
    unseen = [names[k] for k in range(len(names)) if k not in seen]
    raise DataError(
      f"{sources['train'].name}: class(es) without an image in any split: {', '.join(unseen[:5])}; the "
      "folder layout has no class without images, so the tree would not keep the labels"
    )
  return sources, left_out


def write(sources: dict, out: str, data_root: str | None, copy: bool = False) -> list[list]:
  """Writes the tree (see the module's docstring) into the new or empty folder out; -> the rows of split.csv."""
  names = list(sources["train"].class_names)
  folders = class_folders(names)
  root = os.path.abspath(os.path.expanduser(data_root)) if data_root else None
  rows = []
  partial = f"{os.path.abspath(out)}.partial-{os.getpid()}"  # renamed to out once complete
  os.makedirs(partial)
  try:
    for split, src in sources.items():
      used = {}
      for i in range(len(src)):
        label, path = int(src.labels[i]), os.path.abspath(src.path(i))
        folder = os.path.join(partial, split, folders[label])
        if label not in used:
          os.makedirs(folder)
          used[label] = set()
        target = os.path.join(folder, _file_name(path, used[label]))
        if copy:
          shutil.copy2(path, target)
        else:
          os.symlink(path, target)
        inside = root is not None and os.path.commonpath([root, path]) == root
        rows.append([split, label, names[label], os.path.relpath(path, root) if inside else path])
    with open(os.path.join(partial, "split.csv"), "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["split", "label", "class_name", "path"])
      writer.writerows(rows)
    if os.path.isdir(out):
      os.rmdir(out)  # empty (checked before): fails rather than replace anything written there since
    os.rename(partial, out)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return rows


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.write_split", __doc__, argv)
  p.add_argument(
    "--config",
    required=True,
    help="config file, optionally with a preset, whose data.* keys name the data set and its split",
  )
  p.add_argument("--out", required=True, help="the folder to write the tree into: a new or an empty one")
  p.add_argument(
    "--copy",
    action="store_true",
    help="copy the images (a tree that stands alone) instead of linking to them (default)",
  )
  args, pairs = cli.parse(p, argv)
  cli.check_out(p, args.out)
  if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
    p.error(
      f"--out {args.out} exists and is not an empty folder: give a new folder (nothing is ever written into "
      "an existing one)"
    )
  cli.setup_logging()

  from fgattn_jax import config as config_lib

  try:
    cfg = config_lib.config_from_args(args.config, pairs)
  except config_lib.ConfigError as e:
    p.error(str(e))
  d = cfg.data
  if d.source != "folder":
    p.error(
      f"data.source={d.source!r} has no image files to write: only the folder layouts can be written "
      "(--config.data.source=folder with data.name one of the layouts and data.root their folder)"
    )
  from data_pipelines.sources.folders import ALIASES

  # A tree written where the data set's images are looked for would become part of it (the plain tree's every
  # subfolder is a class; Landmarks walks train/).
  read = {"folder": "", "landmarks": "train"}.get(ALIASES.get(d.name, d.name))
  if d.root and read is not None:
    looked = os.path.realpath(os.path.join(os.path.expanduser(d.root), read))
    if os.path.commonpath([looked, os.path.realpath(args.out)]) == looked:
      p.error(
        f"--out {args.out} is inside {looked}, where the {d.name} layout looks for its images: the written "
        "tree would become part of the data set. Give a folder outside it"
      )
  try:
    sources, left_out = open_splits(cfg)
    rows = write(sources, args.out, d.root, copy=args.copy)
  except cli.user_errors() as e:  # a missing data set or a setting: the message says what to do
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    hint = (
      " (this file system has no symbolic links: add --copy)"
      if not args.copy and e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS)
      else ""
    )
    print(f"error: cannot write {args.out}: {e.strerror or e}{hint}", file=sys.stderr)
    return 1

  from data_pipelines.sources.base import Source

  train = sources["train"]
  numbered = class_folders(train.class_names) != [safe_name(n) for n in train.class_names]
  print(
    f"wrote the split of {train.name} ({train.location}) to {args.out} ({'copies' if args.copy else 'symbolic links'}):"
  )
  for split in SPLITS:
    if split in sources:
      n = sum(r[0] == split for r in rows)
      print(f"  {split:<6} {n:>9} images {len(set(sources[split].labels.tolist())):>7} classes")
    else:
      print(f"  {split:<6} none: {left_out[split]}")
  print(f"  list   {os.path.join(args.out, 'split.csv')}")
  if numbered:
    print("  class folders start with their label (the names do not sort in label order, or clash)")
  if getattr(train, "absent", 0):
    print(f"  {train.absent} listed images were absent and are not in the split")
  if getattr(train, "_boxes", None) is not None or train.num_parts:
    print("  boxes and part points are not written: the folder layout has none")
  if type(train).load_image is not Source.load_image:
    print(
      f"  note: the {train.name} source changes its images when it reads them (load_image); the folder layout "
      "reads the files as they are"
    )
  print(
    f"  train on it: --config.data.source=folder --config.data.name=folder --config.data.root={args.out} "
    f"--config.data.num_classes={train.num_classes}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
