"""Maps drawn over images, and panels of captioned tiles (NumPy and Pillow; no JAX): what visualize writes.

Images are uint8 (H, W, 3); maps are float (h, w) of any size, resized to the image (bilinear, pixel centres).
Every function returns a new array and leaves its inputs alone.
"""

from __future__ import annotations

import html
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One colour per part or scale, in order (red, green, blue, yellow, magenta, cyan, orange, purple), then again.
PALETTE = (
  (230, 25, 75),
  (60, 180, 75),
  (0, 130, 200),
  (255, 225, 25),
  (240, 50, 230),
  (70, 240, 240),
  (245, 130, 48),
  (145, 30, 180),
)
MIN_TILE = 160  # small images (64 px in CPU runs) are enlarged so that captions and detail stay readable
CAPTION_H, TITLE_H, LINE_H, GAP = 14, 20, 14, 6


def _unit(m) -> np.ndarray:
  """A map scaled to [0, 1] by its own min and max; a constant map -> zeros."""
  m = np.nan_to_num(np.asarray(m, np.float32))
  lo, span = m.min(), m.max() - m.min()
  return (m - lo) / span if span > 0 else np.zeros_like(m)


def resize_map(m, hw) -> np.ndarray:
  """(h, w) float map -> (H, W) float32, bilinear with half-pixel centres, so that the overlays line up with the
  maps the metrics use: Pillow's resize equals jax.image.resize 'bilinear' (to float32 rounding) without
  antialias when enlarging and with it (the default) when shrinking."""
  m = np.asarray(m, np.float32)
  if m.shape == tuple(hw):
    return m.copy()
  return np.asarray(Image.fromarray(m, mode="F").resize((hw[1], hw[0]), Image.BILINEAR), np.float32)


def heatmap_rgb(m, cmap: str = "jet") -> np.ndarray:
  """(h, w) map -> uint8 (h, w, 3), its own min to max over the colormap: maps of any scale compare by shape."""
  from matplotlib import colormaps  # here, not at the top: importing matplotlib costs more than the rest

  return np.round(colormaps[cmap](_unit(m))[..., :3] * 255).astype(np.uint8)


def overlay(image, m, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
  """The map coloured (min to max) and blended over the image."""
  image = np.asarray(image)
  heat = heatmap_rgb(resize_map(m, image.shape[:2]), cmap).astype(np.float32)
  return np.round((1 - alpha) * image + alpha * heat).astype(np.uint8)


def part_overlay(image, maps, colours=None, alpha: float = 0.6) -> np.ndarray:
  """(h, w, N) part maps, each scaled to [0, 1] and in colours[n] (cycling): the colour is the weighted sum of the
  parts' colours (clipped), blended by alpha times the strongest weight, so where no part is active the image
  shows through."""
  image, maps = np.asarray(image), np.asarray(maps)
  colours = np.asarray(_palette(colours), np.float32).reshape(-1, 3)
  n = maps.shape[-1]
  weights = np.stack([_unit(resize_map(maps[..., i], image.shape[:2])) for i in range(n)], axis=-1)  # (H, W, N)
  colour = np.clip(weights @ colours[np.arange(n) % len(colours)], 0, 255)
  a = alpha * weights.max(axis=-1, keepdims=True)
  return np.round((1 - a) * image + a * colour).astype(np.uint8)


def _palette(colours):
  """colours, or PALETTE for None (not `colours or PALETTE`: an array's truth value is an error)."""
  colours = PALETTE if colours is None else colours
  if len(colours) == 0:
    raise ValueError("colours is empty")
  return colours


def _colour(colours, i):
  colours = _palette(colours)
  return tuple(int(c) for c in colours[i % len(colours)])


def _pixel_span(a, b) -> tuple[int, int]:
  """The pixels whose centres lie in [a, b) (continuous coordinates, pixel c covers [c, c + 1)); at least one."""
  a, b = min(a, b), max(a, b)
  first = int(np.floor(a + 0.5))
  return first, max(first, int(np.floor(b + 0.5)) - 1)


def draw_boxes(image, boxes, colours=None, width: int = 2) -> np.ndarray:
  """(K, 4) boxes (x0, y0, x1, y1) in continuous pixel coordinates (as the data sources give them), the k-th in
  colours[k] (cycling), `width` pixels inside the box's edge; rows with a NaN are skipped. A box outlines the pixels
  whose centres it holds, so [5, 5, 25, 15] marks columns 5..24 and rows 5..14; a degenerate box is still seen.
  Drawn with slices, not ImageDraw.rectangle, which spills outside boxes thinner than twice the width."""
  out = np.array(image, np.uint8)  # a copy
  h, w = out.shape[:2]
  width = max(1, int(width))

  def fill(r0, r1, c0, c1, colour):  # inclusive pixel ranges, clipped to the image
    out[min(max(r0, 0), h) : min(max(r1 + 1, 0), h), min(max(c0, 0), w) : min(max(c1 + 1, 0), w)] = colour

  for k, b in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
    if np.isfinite(b).all():
      (x0, x1), (y0, y1) = _pixel_span(b[0], b[2]), _pixel_span(b[1], b[3])
      colour = _colour(colours, k)
      fill(y0, min(y0 + width - 1, y1), x0, x1, colour)
      fill(max(y1 - width + 1, y0), y1, x0, x1, colour)
      fill(y0, y1, x0, min(x0 + width - 1, x1), colour)
      fill(y0, y1, max(x1 - width + 1, x0), x1, colour)
  return out


def draw_points(image, points, colours=None, radius: int = 3) -> np.ndarray:
  """(K, 2) points (x, y) in continuous pixel coordinates, filled circles (2 * radius + 1 pixels across, centred on
  the pixel that holds the point) in colours[k] with a 1-pixel black outline, to stand out on any colour; rows
  with a NaN (parts not visible) are skipped."""
  canvas = Image.fromarray(np.asarray(image, np.uint8).copy())
  draw = ImageDraw.Draw(canvas)
  for k, p in enumerate(np.asarray(points, np.float64).reshape(-1, 2)):
    if np.isfinite(p).all():
      x, y = int(np.floor(p[0])), int(np.floor(p[1]))
      draw.ellipse(
        [x - radius, y - radius, x + radius, y + radius], fill=_colour(colours, k), outline=(0, 0, 0), width=1
      )
  return np.asarray(canvas)


def guided_rgb(g) -> np.ndarray:
  """A (H, W, 3) input gradient as usually shown: centred, 0.1 per standard deviation around mid-grey, whatever its
  scale (an early layer's or a weak model's gradients can spread over 1e-10); a constant one is all mid-grey."""
  g = np.asarray(g, np.float64)
  std = g.std()
  g = (g - g.mean()) / (std if std > 0 else 1.0) * 0.1 + 0.5
  return np.round(np.clip(g, 0, 1) * 255).astype(np.uint8)


def _fit(tile, th, tw) -> Image.Image:
  """The tile at (th, tw): nearest for an enlargement by one integer factor >= 2 (each pixel a sharp block, so the
  small CPU images stay exact), bilinear otherwise."""
  image = Image.fromarray(np.asarray(tile, np.uint8))
  h, w = image.height, image.width
  if (h, w) == (th, tw):
    return image
  integer = th % h == 0 and tw % w == 0 and th // h == tw // w >= 2
  return image.resize((tw, th), Image.NEAREST if integer else Image.BILINEAR)


def panel(tiles, title: str = "", footer_lines=(), tile_size=None, per_row: int = 6) -> np.ndarray:
  """(caption, uint8 image) tiles in rows of per_row, each caption above its tile, the title on top, footer lines
  below, on white: one PNG per image that reads on its own.

  Size: tiles (th, tw) = tile_size, or else the largest height and width among the tiles, both times the smallest
  integer s >= 1 that brings the longer side to at least MIN_TILE (32 px -> 160, 64 px -> 192: s = ceil(160 / 64));
  width = cols * tw + (cols + 1) * GAP with cols = min(len(tiles), per_row); height = TITLE_H + rows * (CAPTION_H +
  th + GAP) + GAP + len(footer_lines) * LINE_H, rows = ceil(len(tiles) / per_row).
  """
  if not tiles:
    raise ValueError("a panel needs at least one tile")
  if tile_size is None:
    th, tw = max(np.asarray(t).shape[0] for _, t in tiles), max(np.asarray(t).shape[1] for _, t in tiles)
    scale = max(1, -(-MIN_TILE // max(th, tw)))
    th, tw = th * scale, tw * scale
  else:
    th, tw = tile_size
  cols, rows = min(len(tiles), per_row), -(-len(tiles) // per_row)
  width = cols * tw + (cols + 1) * GAP
  height = TITLE_H + rows * (CAPTION_H + th + GAP) + GAP + len(footer_lines) * LINE_H
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  draw.text((GAP, 4), title, fill="black", font=font)
  for i, (caption, tile) in enumerate(tiles):
    x = GAP + (i % cols) * (tw + GAP)
    y = TITLE_H + (i // cols) * (CAPTION_H + th + GAP)
    draw.text((x, y), _clip_text(draw, caption, font, tw), fill="black", font=font)
    canvas.paste(_fit(tile, th, tw), (x, y + CAPTION_H))
  y = TITLE_H + rows * (CAPTION_H + th + GAP) + GAP
  for line in footer_lines:
    draw.text((GAP, y), line, fill="black", font=font)
    y += LINE_H
  return np.asarray(canvas)


def _clip_text(draw, text, font, width) -> str:
  """The caption cut (with '...') to the tile's width, so neighbours' captions never overlap."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + "...", font=font) > width:
    text = text[:-1]
  return text + "..."


def save_png(path, image) -> str:
  """Writes image as a PNG at path, creating its folders; returns path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path


def write_index(out_dir, entries, title: str) -> str:
  """out_dir/index.html: the panels in a responsive grid; entries are {'png': path, 'caption': text}. Links are
  relative (an absolute png is made relative to out_dir), so the folder can be copied or served anywhere."""

  def link(png):
    png = os.fspath(png)
    return html.escape((os.path.relpath(png, out_dir) if os.path.isabs(png) else png).replace(os.sep, "/"))

  cells = "\n".join(
    f'<figure><a href="{link(e["png"])}"><img src="{link(e["png"])}" loading="lazy" alt="">'
    f"</a><figcaption>{html.escape(e['caption'])}</figcaption></figure>"
    for e in entries
  )
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(min(480px, 100%), 1fr)); gap: 1em; }}
figure {{ margin: 0; }} img {{ max-width: 100%; border: 1px solid #ccc; }} figcaption {{ font-size: 0.9em; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<div class="grid">
{cells}
</div></body></html>
"""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "index.html")
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path
