"""Image files a user points at, without labels: the new images `python -m fgattn_jax.predict` classifies.

Each path is an image file or a folder searched recursively (IMAGE_EXTENSIONS, hidden files and archive leftovers
skipped, as in the folder layouts); the examples are in the order given, each folder's files sorted. Every label
is 0 (unknown): the source is for predictions, never for training or scoring.
"""

from __future__ import annotations

import os
from pathlib import Path

from data_pipelines.sources.base import DataError
from data_pipelines.sources.folders import IMAGE_EXTENSIONS, FileSource, image_files


class ImageFiles(FileSource):
  name = "files"

  def __init__(self, paths, class_names):
    files = []
    for path in map(Path, paths):
      if path.is_dir():
        files += image_files(path)
      elif path.is_file():
        files.append(path)  # named by the user: read whatever its extension (a corrupt one is skipped and named)
      else:
        raise DataError(f"{path}: no such file or folder")
    if not files:
      raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, paths))}")
    files = list(dict.fromkeys(files))  # a file named twice (or inside a folder also given) is predicted once
    self._set("files", os.path.commonpath([str(f.parent) for f in files]), files, [0] * len(files), class_names)
