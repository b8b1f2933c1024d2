"""What every scheme's config shares; each key is documented here once.

A scheme's config file starts from `get_config()` and changes what differs, e.g.

    from configs import common

    PRESETS = {"": "embedded synthetic data, CPU-sized", "cub": "CUB-200-2011 at 448"}

    def get_config(arg=None):
      c = common.get_config()
      if arg:
        common.use_dataset(c, arg)
      return c
"""

import ml_collections
from ml_collections.config_dict import placeholder

# The data sets the presets name, at the papers' sizes: train on a random `image_size` crop of the image
# resized to `resize_size` (shorter side), evaluate on the centre crop.
DATASETS = {
  "synthetic": dict(source="synthetic", name="synthetic", num_classes=10, image_size=96, resize_size=112),
  "cub": dict(source="folder", name="cub", num_classes=200, image_size=448, resize_size=512),
  # FGVC-Aircraft's own protocol, which MA-CNN and RA-CNN follow: train on trainval (train + val, 6667 images)
  "aircraft": dict(
    source="folder", name="aircraft", num_classes=100, image_size=448, resize_size=512, train_split="trainval"
  ),
  "cars": dict(source="folder", name="cars", num_classes=196, image_size=448, resize_size=512),
  "dogs": dict(source="folder", name="dogs", num_classes=120, image_size=448, resize_size=512),
  # CIFAR's augmentation in the ResNet paper and ABN's CIFAR runs: a random 32 x 32 window of the image padded
  # with 4 black pixels on every side.
  "cifar10": dict(source="tfds", name="cifar10", num_classes=10, image_size=32, resize_size=32, augment=dict(pad=4)),
  "cifar100": dict(source="tfds", name="cifar100", num_classes=100, image_size=32, resize_size=32, augment=dict(pad=4)),
  # Google Landmarks v2 (its train.csv and train/a/b/c/<id>.jpg), the top_classes landmarks with the most images,
  # split by landmark_recipe(); evaluated during training on val, at the end with `evaluate --split test`.
  "landmarks": dict(
    source="folder", name="landmarks", num_classes=100, image_size=224, resize_size=256, eval_split="val"
  ),
  # Aligned 178 x 218 faces with 40 boolean attributes; the label is the first attribute (2 classes).
  "celeba": dict(source="tfds", name="celeb_a", num_classes=2, image_size=224, resize_size=224),
}


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameters, data order and augmentation all derive from it

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # 'synthetic' (embedded, no files) | 'tfds' | 'folder' (the data set's own layout)
  c.data.name = "synthetic"  # folder layouts: cub, aircraft, cars, dogs, landmarks, folder; or a TFDS name (cars196)
  c.data.root = placeholder(str)  # folder layouts: the data set's folder; TFDS: its data_dir
  c.data.num_classes = 10
  c.data.image_size = 96  # the network's input side
  c.data.resize_size = 112  # shorter side before cropping
  c.data.batch_size = 32  # global, over all devices and hosts
  c.data.eval_batch_size = 64
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.level = "variant"  # FGVC-Aircraft only: 'variant' (100 classes) | 'family' (70) | 'manufacturer' (30)
  # The stratified split of a data set that ships without one ('folder' without train/val/test folders, 'landmarks');
  # fixed for a given seed and set of images; python -m fgattn_jax.write_split writes one out to share it.
  c.data.split = ml_collections.ConfigDict()
  c.data.split.val_fraction = 0.1  # of each class
  c.data.split.test_fraction = 0.1  # of each class; the rest trains
  c.data.split.seed = 0  # another seed, another split (independent of the run's seed)
  c.data.top_classes = 0  # 'landmarks' and 'folder' only: keep the N classes with the most images; 0 = all
  c.data.balanced = False  # training: sample every class equally often (for imbalanced data sets)
  c.data.num_workers = 0  # decoding processes per host; 0 = threads in the main process
  c.data.synthetic = ml_collections.ConfigDict()  # the embedded data set (data.source = 'synthetic')
  c.data.synthetic.num_train = 2000
  c.data.synthetic.num_test = 500
  c.data.synthetic.num_parts = 4
  c.data.synthetic.resolution = 0  # side of the generated images; 0 = data.resize_size
  c.data.synthetic.stripe = 0  # width of the parts' stripes in pixels; 0 = resolution / 64
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.flip = True
  c.data.augment.rotation = 0.0  # maximum degrees either way
  c.data.augment.brightness = 0.0  # maximum relative change
  c.data.augment.colour = 0.0  # maximum relative saturation change
  c.data.augment.pad = 0  # black pixels around the resized image before the random crop (CIFAR: 4)
  # The training crop: 'resize' (shorter side to resize_size, a random image_size window) | 'random_resized'
  # (torchvision's RandomResizedCrop: a window of crop_area of the image's area and crop_ratio width / height,
  # resized to image_size; ImageNet recipes)
  c.data.augment.crop = "resize"
  c.data.augment.crop_area = (0.08, 1.0)
  c.data.augment.crop_ratio = (3 / 4, 4 / 3)
  c.data.augment.eval_rotation = 0.0  # evaluation: maximum degrees either way, one angle per example, every pass

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "vgg19"  # any name of fgattn_jax.models.BACKBONES
  c.model.width = 1.0  # channel multiplier (tests run tiny networks)
  c.model.head = "gap"  # VGG only: 'gap' (global average pool + linear) | 'classifier' (torchvision's FC-4096)
  # CIFAR ResNets' blocks: 'basic' (He et al.; '' = basic) | 'bottleneck' | 'auto' (ABN code: bottleneck from depth 44)
  c.model.block = ""
  # Dropout rate; unset = the family's default: VGG's 'classifier' head 0.5, else 0. Where: WRN inside every block
  # (the WRN paper's); VGG's 'classifier' after each FC-4096 (torchvision's); else before the class layer.
  c.model.dropout = placeholder(float)
  c.model.dtype = "auto"  # compute dtype: 'auto' = bfloat16 on GPU/TPU, float32 on CPU; parameters float32
  c.model.pretrained = placeholder(str)  # torchvision .pth or .safetensors you have; nothing is downloaded
  c.model.require_pretrained = False  # refuse to start without model.pretrained (presets that fine-tune)
  c.model.frozen_bn = False  # use and keep the (pretrained) running statistics of every BatchNorm
  c.model.freeze_features = False  # train the head only

  c.scheme = "baseline"  # fgattn_jax.schemes.SCHEMES
  c.init_from = placeholder(str)  # another run's workdir: start from its latest model weights
  # The run: the phases named in phase_order, in that order (a ConfigDict keeps its keys sorted, not in the
  # order written); consecutive phases with cycle=True repeat `cycles` times (alternating training).
  c.phases = ml_collections.ConfigDict({"main": phase()})
  c.phase_order = ("main",)
  c.cycles = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.every_epochs = 1.0  # evaluate on data.eval_split this often during training (0: only at the end)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the 'data' (batch) axis; -1 = all

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500  # also at every evaluation, at the end of each phase and on SIGTERM/SIGINT
  c.checkpoint.keep = 3  # the latest checkpoints kept, besides the best by evaluation top-1

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 20
  c.log.tensorboard = True
  return c


def phase(trains: str = "all", epochs: float = 10.0, losses: dict | None = None, **optim) -> ml_collections.ConfigDict:
  """One phase of a run: which parameters train, on which weighted losses, with which optimiser, how long."""
  p = ml_collections.ConfigDict()
  p.trains = trains  # a parameter group of the scheme: 'all', 'head', ...
  # Floats whatever literal a preset wrote, so that an override may take a fraction (--config.phases.main.epochs=0.5).
  p.epochs = float(epochs)  # length; 0 skips the phase
  p.steps = 0  # length in steps instead, when > 0
  p.cycle = False  # part of the alternating cycle, repeated config.cycles times
  p.losses = ml_collections.ConfigDict({k: float(w) for k, w in (losses or {"ce": 1.0}).items()})  # name -> weight
  p.optim = ml_collections.ConfigDict()
  p.optim.name = "sgd"  # 'sgd' (momentum) | 'adamw'
  p.optim.lr = 0.01  # peak learning rate for the global batch
  p.optim.momentum = 0.9
  p.optim.nesterov = False
  p.optim.b1, p.optim.b2 = 0.9, 0.999  # adamw
  p.optim.weight_decay = 5e-4  # not applied to BatchNorm parameters and biases
  p.optim.clip_norm = 0.0  # global gradient-norm clipping; 0 = off
  # Parameters not filled from model.pretrained learn this much faster than the pretrained ones trained beside them
  # (a phase that trains new layers only runs them at lr).
  p.optim.new_layer_lr_mult = 10.0
  p.optim.update(optim)
  p.schedule = ml_collections.ConfigDict()
  p.schedule.kind = "cosine"  # 'cosine' | 'step' | 'constant'
  p.schedule.warmup_epochs = 0.0
  p.schedule.boundaries = ()  # 'step': epochs (from the phase's start) at which the rate is multiplied by decay
  p.schedule.decay = 0.1
  p.plateau = ml_collections.ConfigDict()  # end the phase early when its loss stops falling
  p.plateau.patience = 0  # logging windows without a relative improvement of min_delta; 0 = off
  p.plateau.min_delta = 1e-3
  return p


def cpu_sized(c: ml_collections.ConfigDict, losses: dict | None = None) -> ml_collections.ConfigDict:
  """The bare configs' embedded default: 2000 synthetic training images at 64 px and a quarter-width
  VGG-11-BN, 8 epochs, a few minutes on a 2-core CPU. (A ResNet's stem halves the resolution twice before
  its first block and stays at chance here: the classes differ only in 2-pixel stripes.)"""
  c.model.backbone, c.model.head, c.model.width = "vgg11_bn", "gap", 0.25
  c.data.image_size, c.data.resize_size = 64, 72
  c.data.batch_size, c.data.eval_batch_size = 32, 100
  c.phases.main = phase(epochs=8, lr=0.05, weight_decay=5e-4, losses=losses)
  c.phases.main.schedule.warmup_epochs = 0.5
  c.log.every_steps = 10
  return c


# The embedded task on which attention should pay (`:detail` in every scheme's config; benchmarks/accuracy.py): the
# synthetic birds drawn at 288 pixels, whose classes differ only in their parts' stripes, 2 pixels wide. Every
# backbone sees 64 pixels of the image: the image resized to 72 (4x smaller), a random 64 crop. A 4x antialiased
# (triangle-filtered) reduction averages a 4-pixel cycle to exactly its mean, so at 64 every part is a flat patch of
# its hue whatever its pattern, and a plain network cannot tell the classes apart; a scheme that crops or zooms into
# the full-resolution image (the same crop at 288 / 256) can see the stripes.
DETAIL_RESOLUTION, DETAIL_STRIPE, DETAIL_SIDE = 288, 2, 64


def detail_task(c: ml_collections.ConfigDict, full_resolution: bool, losses: dict | None = None):
  """cpu_sized() on the detail task. full_resolution: the input is the 256-pixel crop of the 288-pixel image, for
  a scheme whose first network sees it at DETAIL_SIDE (MA-CNN's object_input, RA-CNN's scale1_input) and whose crops
  sample it at full resolution; else the 64-pixel crop of the image resized to 72, what the backbone sees."""
  cpu_sized(c, losses)
  c.data.synthetic.resolution, c.data.synthetic.stripe = DETAIL_RESOLUTION, DETAIL_STRIPE
  scale = DETAIL_RESOLUTION // 72 if full_resolution else 1
  c.data.image_size, c.data.resize_size = DETAIL_SIDE * scale, 72 * scale
  return c


def landmark_recipe(c: ml_collections.ConfigDict, losses: dict | None = None) -> ml_collections.ConfigDict:
  """The landmark recipe (`:landmarks` in baseline.py and abn.py): Google Landmarks v2's 100 landmarks with the
  most images, a class-stratified 70/15/15 split, class-balanced sampling; rotation +-45 degrees (evaluation images
  too), a random 224 crop of the image resized to 256, brightness +-25%, flips; an ImageNet VGG-16 whose features
  stay frozen under a dropout classifier (torchvision's FC-4096 head, model.pretrained: vgg16-397923af.pth)."""
  use_dataset(c, "landmarks")
  c.data.top_classes = 100
  c.data.num_classes = c.data.get_ref("top_classes")  # one value: overriding either sets both
  c.data.split.update(val_fraction=0.15, test_fraction=0.15)
  c.data.balanced = True
  c.data.augment.update(flip=True, rotation=45.0, brightness=0.25, eval_rotation=45.0)
  c.data.batch_size, c.data.eval_batch_size = 32, 64
  c.model.update(backbone="vgg16", head="classifier", require_pretrained=True, freeze_features=True)
  # The write-up gives no optimiser: this project's fine-tuning one (SGD, the new class layer at 10x).
  c.phases.main = phase(epochs=30, lr=0.01, losses=losses)
  c.phases.main.schedule.warmup_epochs = 1.0
  return c


def use_dataset(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Points c.data at one of DATASETS (source, name, class count and the papers' input sizes)."""
  if name not in DATASETS:
    raise ValueError(f"Unknown data set {name!r}; known: {', '.join(DATASETS)}")
  for key, value in DATASETS[name].items():
    if isinstance(value, dict):  # a group of keys (data.augment)
      c.data[key].update(value)
    else:
      c.data[key] = value
  return c
