"""MA-CNN, the Multi-Attention CNN (Zheng et al., ICCV 2017): the project's headline method.

    python -m fgattn_jax.train --config configs/macnn.py               # the whole method on synthetic data, CPU
    python -m fgattn_jax.train --config configs/macnn.py:e2e           # end-to-end instead of alternating
    python -m fgattn_jax.train --config configs/macnn.py:detail        # where the part crops must see finer detail
    python -m fgattn_jax.train --config configs/macnn.py:cub --config.data.root=/data/CUB_200_2011 \\
        --config.model.pretrained=/weights/vgg19-dcbb9e9d.pth

The run: 'object' trains the object stream; 'init' groups the channels by k-means of their peak positions
and pretrains the grouping layers to those groups; then 'grouping' (the grouping layers on the channel-
grouping loss, convolutions fixed) and 'classify' (convolutions and classifiers, grouping fixed) alternate
`cycles` times (the real-data presets end each early when its loss stops falling: phases.*.plateau);
'parts' trains the part streams on crops around the part maps' peaks and the joint classifier.
Keys: macnn.num_parts, .feature_stage ('' = the last conv stage, conv5_4 for VGG-19), .lam and .margin of
L_cng = Dis + lam Div, .part_streams, .crop_fraction (crop side / image side: 128/448 birds, 96/448 others),
.crop_reference ('image', the paper; 'object': crop_fraction of the object's extent found from the object
stream's activations, so small objects get small crops), .object_crop (a stream on the object's box, found
the same way, beside the parts: the paper's "+ object" for birds, here an option for any data set),
.part_input (the part networks' input side), .part_maps ('centred': each channel minus its mean over the grid,
then relu(tanh(...)), so maps are zero off their part; 'paper': sigmoid of the weighted channel sum, the paper's
equation; 'deploy': tanh(...) of the raw features, the released model's form; see fgattn_jax/models/macnn.py for why
centred is the default), .part_pooling ('weighted': the part
features are the map-weighted mean of the features; 'sum': the paper's sum over the grid, whose scale grows with the
grid and the maps), .object_input (0: the object stream sees the input as it comes; N: it sees it resized to N while
the crops sample the full-resolution input).
"""

from configs import common

PRESETS = {
  "": "the alternating schedule on the embedded synthetic data at 96 px, 4 parts: minutes on a CPU",
  "e2e": "the same data, end to end: after the object stream and the channel-grouping initialisation, L_cls + "
  "L_cng (and the part streams) in one phase",
  "detail": "the embedded task where the classes' detail is finer than 64 px resolve (common.detail_task): the "
  "object stream sees the 256-pixel input at 64, the part streams 51-pixel crops of it at 48",
  "cub": "CUB-200-2011 at 448, VGG-19 from ImageNet weights, 4 parts and the object crop, 128-pixel crops",
  "aircraft": "FGVC-Aircraft at 448, VGG-19 from ImageNet weights, 2 parts, 96-pixel crops",
  "cars": "Stanford Cars at 448, VGG-19 from ImageNet weights, 2 parts, 96-pixel crops",
}


def get_config(arg=None):
  c = common.get_config()
  c.scheme = "macnn"
  c.macnn = dict(
    num_parts=4,
    feature_stage="",
    lam=2.0,
    margin=0.02,
    part_streams=True,
    crop_fraction=0.25,
    crop_reference="image",
    object_crop=False,
    part_input=224,
    part_maps="centred",
    part_pooling="weighted",
    object_input=0,
  )
  if arg in (None, "", "e2e"):
    common.cpu_sized(c)
    c.data.image_size, c.data.resize_size = 96, 108
    # conv3_2: a 24x24 part map (4-pixel cells: conv4_2's 12x12 blurs neighbouring parts into one blob);
    # 24-pixel crops seen at 32
    c.macnn.update(feature_stage="conv3_2", part_input=32)
    c = _alternating(c, epochs=dict(object=4, init=2, grouping=1, classify=1, parts=3), lr=0.05, cycles=2)
    if arg == "e2e":
      _end_to_end(c, epochs=dict(object=3, init=1, main=5))
    return c
  if arg == "detail":
    common.detail_task(c, full_resolution=True)
    # conv3_2 of the 64-pixel object view: a 16x16 map of 16-pixel cells of the 256-pixel input (its parts are
    # 26-pixel squares); 51-pixel crops around the peaks seen at 48 keep the 2-pixel stripes.
    c.macnn.update(feature_stage="conv3_2", object_input=common.DETAIL_SIDE, crop_fraction=0.2, part_input=48)
    return _alternating(c, epochs=dict(object=4, init=2, grouping=1, classify=1, parts=3), lr=0.05, cycles=2)
  common.use_dataset(c, arg)
  c.model.backbone, c.model.head, c.model.require_pretrained = "vgg19", "gap", True
  c.data.batch_size, c.data.eval_batch_size = 16, 64
  birds = arg == "cub"
  # The paper adds the object crop ("4 parts + object") for birds; --config.macnn.object_crop=True elsewhere.
  c.macnn.update(num_parts=4 if birds else 2, crop_fraction=(128 if birds else 96) / 448, object_crop=birds)
  # An alternating phase ends early after 10 logging windows (200 steps) without a 0.1% fall of its loss.
  return _alternating(
    c, epochs=dict(object=10, init=1, grouping=2, classify=5, parts=20), lr=0.001, cycles=3, patience=10
  )


def _end_to_end(c, epochs):
  """The alternating run's 'object' and 'init' phases, then one phase on every loss: the channel-grouping
  initialisation starts the maps apart. Without it (one phase from scratch) all four maps settled on one part: 1.00
  distinct parts hit per image at 64 px, 1.77 with it (random points 0.38; 1200 images, 2-core CPU)."""
  main = common.phase(
    epochs=epochs["main"],
    lr=c.phases.classify.optim.lr,
    # L_cng sums over the grid's cells: 30-170 on the 24x24 map, 15-75x the cross-entropies. At
    # weight 1 it wipes out the features (measured on a 12x12 map: every head at chance); 0.01
    # brings it to their scale (0.1 measured beside it: 1.66 distinct parts, 0.50 of the peaks on a
    # part against 0.64).
    losses={"cls": 1.0, "parts": 1.0, "cng": 0.01, "streams": 1.0, "joint": 1.0},
  )
  main.schedule.warmup_epochs = 0.5
  c.phases = {"object": c.phases.object, "init": c.phases.init, "main": main}
  c.phases.object.epochs, c.phases.init.epochs = float(epochs["object"]), float(epochs["init"])
  c.phase_order, c.cycles = ("object", "init", "main"), 1
  return c


def _alternating(c, epochs, lr, cycles, patience=0):
  c.phases = {
    "object": common.phase(trains="convs", epochs=epochs["object"], lr=lr, losses={"cls": 1.0}),
    # The grouping layers' losses differ in scale by orders of magnitude (L_cng sums over the grid): Adam.
    # The regression to the k-means indicators: at 1e-3 it was still at 0.014 after 111 steps and the maps
    # had not yet split by group; 1e-2 reaches 1e-5 in 37.
    "init": common.phase(
      trains="grouping", epochs=epochs["init"], name="adamw", lr=1e-2, weight_decay=0.0, losses={"group_init": 1.0}
    ),
    # At 1e-3 two one-epoch grouping phases moved L_cng by 9%; at 1e-2 by 65%, and the maps hit more parts.
    "grouping": common.phase(
      trains="grouping", epochs=epochs["grouping"], name="adamw", lr=1e-2, weight_decay=0.0, losses={"cng": 1.0}
    ),
    "classify": common.phase(trains="convs", epochs=epochs["classify"], lr=lr, losses={"cls": 1.0, "parts": 1.0}),
    "parts": common.phase(trains="parts", epochs=epochs["parts"], lr=lr, losses={"streams": 1.0, "joint": 1.0}),
  }
  c.phases.grouping.cycle = c.phases.classify.cycle = True
  if patience:  # the paper's "until both losses stop changing": epochs are then an upper bound
    for name in ("grouping", "classify"):
      c.phases[name].plateau.patience = patience
  c.phase_order = ("object", "init", "grouping", "classify", "parts")
  c.cycles = cycles
  return c
