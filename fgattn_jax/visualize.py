"""See where a trained run looks:

    python -m fgattn_jax.visualize --workdir DIR [--split test] [--num-images 16] [--out DIR]
                                   [--checkpoint latest|best|STEP] [--layer NAME[#K]]
                                   [--amplify LAYER[:CHANNEL]|class] [--config.KEY=VALUE ...]
    python -m fgattn_jax.visualize --workdir DIR PATH [PATH ...] [...]    (your own images: files or folders)

For each image, one PNG panel: the input with its ground-truth box and parts where the data set has them; the
scheme's own attention (ABN: the attention map; MA-CNN: the part maps, each part in its colour, their crops; RA-CNN:
the box of each scale on the image and the zoomed inputs); CAM where the explained classifier is a global-average-
pool + linear head; Grad-CAM and guided Grad-CAM for the predicted and the true class; the top-5 predictions. With
--amplify, the image after feature amplification (gradient ascent on the input) for a stage (and channel) or the
predicted class. OUT/index.html shows every panel. Default OUT: WORKDIR/visualize/SPLIT_stepSTEP (your own
images: WORKDIR/visualize/files_stepSTEP); nothing is written elsewhere. Your own images have no ground truth:
their panels show the predicted class's maps only. Every image is drawn as the model sees it: the run's evaluation
transform (resize, then the centre crop: what lies outside the centre square of a wide image is not drawn).

--layer: the stage Grad-CAM reads (default: the last stage of the explained backbone: the classifier's, scale 1's
for RA-CNN, the object stream's for MA-CNN); in models with several backbones NAME#2 is the second of that name.
"""

from __future__ import annotations

import os
import sys

from fgattn_jax import cli, overlays, trained_run


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.visualize", __doc__, argv)
  p.epilog = None
  p.add_argument("--workdir", required=True, help="a training run's workdir (holds config.json and checkpoints/)")
  p.add_argument(
    "images",
    nargs="*",
    metavar="PATH",
    help="your own image files or folders of them, instead of a split of the run's data set",
  )
  p.add_argument("--split", help="data split to draw (default: the run's data.eval_split)")
  p.add_argument("--num-images", type=int, default=16, help="how many images (the first of the split or PATHs)")
  cli.add_checkpoint_arg(p)
  p.add_argument("--out", help="folder for the panels and index.html (default: WORKDIR/visualize/SPLIT_stepSTEP)")
  p.add_argument("--layer", help="the stage Grad-CAM reads, e.g. conv5_4, layer3, conv5_4#2")
  p.add_argument(
    "--amplify",
    metavar="LAYER[:CHANNEL]|class",
    help="also draw the image after feature amplification for a stage (and channel) or the predicted class",
  )
  p.add_argument("--amplify-steps", type=int, default=20, help="gradient-ascent steps of --amplify")
  p.add_argument(
    "--amplify-step-size",
    type=float,
    default=0.05,
    help="each step's size, in normalised pixel units over the gradient's mean magnitude",
  )
  args, pairs = cli.parse(p, argv)
  if args.num_images < 1:
    p.error(f"--num-images must be at least 1, got {args.num_images}")
  cli.check_out(p, args.out, default=os.path.join(args.workdir, "visualize"))
  if args.amplify_steps < 1 or args.amplify_step_size <= 0:
    p.error(
      f"--amplify-steps must be at least 1 and --amplify-step-size positive, got {args.amplify_steps} and "
      f"{args.amplify_step_size}"
    )
  if args.images and args.split:
    p.error("--split draws from the run's data set: give either --split or your own image PATHs")
  cli.setup_logging()

  import numpy as np

  from fgattn_jax import explain
  from fgattn_jax.models.registry import compute_dtype
  from fgattn_jax.ops import saliency

  run = trained_run.load_run(p, args, pairs, images=args.images or None)
  if run is None:
    return 2
  cfg, split, scheme, model, step, pipe = run.cfg, run.split, run.scheme, run.model, run.step, run.pipe
  model.eval()
  dtype = compute_dtype(cfg.model.dtype)
  layer = args.layer or explain.default_layer(scheme, model)
  amplify = None
  if args.amplify:
    name, _, channel = args.amplify.partition(":")
    if channel and not channel.removeprefix("-").isdigit():  # a negative one is refused below, with the range
      p.error(f"--amplify {args.amplify!r}: the channel after ':' must be a number")
    if channel and name == "class":
      p.error(
        f"--amplify {args.amplify!r}: 'class' amplifies the predicted class; a channel goes with a stage, "
        "e.g. conv5_4:12"
      )
    amplify = dict(
      layer=None if name == "class" else name,
      channel=int(channel) if channel else None,
      use_class=name == "class",
      steps=args.amplify_steps,
      step_size=args.amplify_step_size,
    )
  probe_fn, probe_images = explain.probe(scheme, model, pipe)
  stages = saliency.layer_names(probe_fn, probe_images)
  layer, frame = explain.check_layer(p, scheme, model, stages, layer)
  if amplify and amplify["layer"]:  # (the image is amplified: any stage will do)
    amplify["layer"] = explain.check_layer(p, scheme, model, stages, amplify["layer"], drawn=False)[0]
  if amplify and amplify["layer"] and amplify["channel"] is not None:
    try:
      saliency.check_channel(
        amplify["layer"], amplify["channel"], saliency.layer_shape(probe_fn, probe_images, amplify["layer"])[-1]
      )
    except ValueError as e:
      p.error(f"--amplify {args.amplify!r}: {e}")

  out = args.out or os.path.join(args.workdir, "visualize", f"{split}_step{step}")
  # (A multi-task ABN explains its first task, whose classes are not the data set's: numbered, and the task named.)
  own = bool(args.images)
  names = run.names if scheme.main_output == "logits" else None
  task = "" if scheme.main_output == "logits" else f"{scheme.main_output}: "
  # CAM reads one stream's own head (MA-CNN's object stream, RA-CNN's scale 1), for the main output's classes.
  cam = explain.has_cam(scheme, model)
  cam_head = scheme.cam_net(model)[1] if cam else None
  cam_head = None if cam_head == scheme.main_output else cam_head
  entries, done = [], 0
  for batch in pipe:
    maps = explain.explain(scheme, model, batch, layer=layer, dtype=dtype, cam=cam)
    maps = _to_numpy(maps)
    amp = explain.to_uint8(explain.amplified(scheme, model, batch, dtype=dtype, **amplify)) if amplify else None
    for i in np.flatnonzero(batch["mask"]):
      if done == args.num_images:
        break
      image_id = int(batch["index"][i])
      path = os.path.join(out, f"{split}_{image_id:06d}.png")
      what = os.path.basename(pipe.source.describe(image_id)) if own else f"{split} image {image_id}"
      tiles, footer = panel_tiles(batch, maps, amp, i, layer, names, truth=not own, frame=frame, cam_head=cam_head)
      footer = [task + line for line in footer]
      overlays.save_png(path, overlays.panel(tiles, title=f"{what} - {scheme.name}, {layer}", footer_lines=footer))
      entries.append({"png": os.path.basename(path), "caption": f"{what}: {footer[0]}"})
      done += 1
    if done == args.num_images:
      break
  index = overlays.write_index(out, entries, f"{args.workdir} - {split}, checkpoint step {step}")
  print(
    f"{done} panel{'' if done == 1 else 's'} of {split!r} (checkpoint step {step}, Grad-CAM at {layer}) in {out}; "
    f"open {index}"
  )
  return 0


def _to_numpy(tree):
  import jax
  import numpy as np

  return jax.tree.map(np.asarray, tree)


def _name(names, k) -> str:
  return f"{names[k]} ({k})" if names and k < len(names) else str(k)


def panel_tiles(batch, maps, amplified, i, layer, names, truth=True, frame="image", cam_head=None):
  """One image's tiles (caption, uint8 image) and footer lines, from explain()'s host arrays. truth=False: an image
  without a label (the user's own): the predicted class's maps only. frame: what the Grad-CAM's layer sees
  (scheme.layer_input): 'image', or the index of the attention crop its map is drawn on. cam_head: the output whose
  head CAM reads, where it is not the main one."""
  import numpy as np

  from fgattn_jax import explain

  image = np.asarray(batch["image"][i])
  size = min(image.shape[:2])  # marks in proportion to the image: panels enlarge small images
  marked = overlays.draw_boxes(image, batch["box"][i][None], colours=[(255, 255, 255)], width=max(1, size // 100))
  if "parts" in batch:  # only sources with part points (CUB, the synthetic set) have them
    marked = overlays.draw_points(marked, batch["parts"][i], radius=max(1, round(size / 40)))
  tiles = [("input, ground truth" if truth else "input", marked)]
  att = maps["attention"]
  if "part_maps" in att:
    shown = overlays.part_overlay(image, att["part_maps"][i])
    if "boxes" in att:
      shown = overlays.draw_boxes(shown, att["boxes"][i], colours=overlays.PALETTE)
    tiles.append(("part maps and crops", shown))
  elif "maps" in att:
    m = att["maps"][i]
    tiles += [
      (f"attention map{'' if m.shape[-1] == 1 else f', task {t}'}", overlays.overlay(image, m[..., t]))
      for t in range(m.shape[-1])
    ]
  elif "boxes" in att:
    tiles.append(("box of each scale", overlays.draw_boxes(image, att["boxes"][i], colours=overlays.PALETTE)))
  crop_caption = (lambda c: f"part {c + 1} crop") if "part_maps" in att else (lambda c: f"scale {c + 2} input")
  for c, crop in enumerate(att.get("crops", [])):
    tiles.append((crop_caption(c), explain.to_uint8(crop[i])))
  # A stage of a zoomed stream (RA-CNN's scale 2, MA-CNN's part streams) maps its own input, not the image.
  under = image if frame == "image" else explain.to_uint8(att["crops"][frame][i])
  gradcam = f"Grad-CAM ({layer})" if frame == "image" else f"{crop_caption(frame)}: Grad-CAM"
  probs = maps["probs"][i]
  pred, true = int(maps["classes"]["pred"][i]), int(maps["classes"]["true"][i])
  for who in ("pred", "true") if truth else ("pred",):
    label = f"{'predicted' if who == 'pred' else 'true'} class"
    if f"cam_{who}" in maps:
      cam = f"CAM ({cam_head} head)" if cam_head else "CAM"
      tiles.append((f"{cam}, {label}", overlays.overlay(image, maps[f"cam_{who}"][i])))
    # A map that is zero everywhere (no positive evidence for the class at that stage) is said to be, not drawn as
    # a uniformly cold overlay that reads as a map; its guided map is zero as well.
    zero = "[all zero] " if not np.any(maps[f"gradcam_{who}"][i]) else ""
    tiles.append((f"{zero}{gradcam}, {label}", overlays.overlay(under, maps[f"gradcam_{who}"][i])))
    if frame == "image":  # (guided: the image's gradient times the map, both in the image's frame)
      tiles.append((f"{zero}guided Grad-CAM, {label}", overlays.guided_rgb(maps[f"guided_{who}"][i])))
  if amplified is not None:
    tiles.append(("amplified", amplified[i]))
  top = np.argsort(-probs, kind="stable")[:5]
  footer = [
    f"predicted {_name(names, pred)}" + (f", true {_name(names, true)}" if truth else ""),
    "top-5: " + ", ".join(f"{_name(names, int(k))} {probs[k]:.2f}" for k in top),
  ]
  return tiles, footer


if __name__ == "__main__":
  sys.exit(main())
