"""ABN, the Attention Branch Network (Fukui et al., CVPR 2019).

    python -m fgattn_jax.train --config configs/abn.py                        # synthetic data, CPU, minutes
    python -m fgattn_jax.train --config configs/abn.py:detail                 # the detail task (benchmarks.accuracy)
    python -m fgattn_jax.train --config configs/abn.py:cifar100_resnet110     # the paper's CIFAR-100 schedule
    python -m fgattn_jax.train --config configs/abn.py:cub --config.data.root=/data/CUB_200_2011 \\
        --config.model.pretrained=/weights/resnet50-11ad3fa6.pth
    python -m fgattn_jax.train --config configs/abn.py:celeba --config.data.root=/data/tfds \\
        --config.model.pretrained=/weights/resnet101-cd907fc2.pth          # 40 attributes, a map each
    python -m fgattn_jax.train --config configs/abn.py:landmarks --config.data.root=/data/gldv2 \
        --config.model.pretrained=/weights/vgg16-397923af.pth --workdir workdirs/landmarks_abn
    python -m fgattn_jax.evaluate --workdir workdirs/landmarks_abn --split test --checkpoint best

Keys: abn.branch (a stage name; '' = the family's branch point: ResNet layer3, CIFAR ResNet / WRN layer2,
VGG the last conv block; 'pool5': a VGG's last block and its pooling, the 7x7 map at 224),
abn.map_kernel (1 as in the paper, 3 as in the official code), abn.residual
(perception input g * (1 + M); false: g * M), abn.task_classes (multi-task: the class count of each of the
data's attributes; empty = one task on the labels). Loss weights: phases.main.losses.att (alpha) and .per
(beta).
"""

from configs import common

PRESETS = {
  "": "embedded synthetic data at 64 px, quarter-width VGG-11-BN branching at conv4_2: minutes on a CPU",
  "detail": "the embedded task where the classes' detail is finer than 64 px resolve (common.detail_task)",
  "cifar100_resnet110": "CIFAR-100, the ABN code's ResNet-110 (Bottleneck blocks: 164 layers, width 256, 1.7M "
  "parameters; SGD 0.1, batch 128, 300 epochs, x0.1 at 150 and 225, wd 1e-4)",
  "cifar100_resnet110_basic": "CIFAR-100, He et al.'s BasicBlock ResNet-110 (110 layers, width 64), same schedule",
  "cifar100_wrn28_10": "CIFAR-100, WRN-28-10 with dropout 0.3 (300 epochs, x0.2 at 150 and 225, wd 5e-4)",
  "imagenet_resnet50": "ImageNet (TFDS imagenet2012, manual download), RandomResizedCrop 224, ResNet-50 from "
  "scratch, 90 epochs",
  "cub": "CUB-200-2011 at 448, ResNet-50 from ImageNet weights",
  "aircraft": "FGVC-Aircraft at 448, ResNet-50 from ImageNet weights",
  "cars": "Stanford Cars at 448, ResNet-50 from ImageNet weights",
  "dogs": "Stanford Dogs at 448, ResNet-50 from ImageNet weights",
  "cub_frozen": "CUB-200-2011, frozen ImageNet ResNet-50 features: only the branches train, alpha 0.25, beta 1",
  "landmarks": "the landmark recipe (baseline.py:landmarks) with an attention branch after VGG-16's pool5, frozen "
  "features, alpha 0.25, beta 1",
  "synthetic_parts": "multi-task on the synthetic set: one task (and one attention map) per part's pattern",
  "celeba": "multi-task: CelebA's 40 facial attributes (TFDS celeb_a), a two-class task and an attention map "
  "each, ResNet-101 from ImageNet weights at 224",
}

# The CIFAR-100 networks of ABN's code (models/cifar/, checkpoints/cifar100/*/log.txt): its CIFAR ResNets take
# Bottleneck blocks from depth 44 up (model.block='auto'), its WRN dropout 0.3 and x0.2 decays.
CIFAR = {
  "cifar100_resnet110": dict(backbone="resnet110", block="auto", wd=1e-4, decay=0.1),
  "cifar100_resnet110_basic": dict(backbone="resnet110", block="basic", wd=1e-4, decay=0.1),
  "cifar100_wrn28_10": dict(backbone="wrn28_10", dropout=0.3, wd=5e-4, decay=0.2),
}

# The fine-grained presets: (the data set, whether the ImageNet features stay frozen), ResNet-50 from ImageNet.
FINE_GRAINED = {
  "cub": ("cub", False),
  "aircraft": ("aircraft", False),
  "cars": ("cars", False),
  "dogs": ("dogs", False),
  "cub_frozen": ("cub", True),
}


def get_config(arg=None):
  c = common.get_config()
  c.scheme = "abn"
  c.abn = dict(branch="", map_kernel=1, residual=True, task_classes=())
  losses = {"att": 1.0, "per": 1.0}
  if arg in (None, "", "synthetic_parts", "detail"):
    if arg == "detail":
      common.detail_task(c, full_resolution=False, losses=losses)
    else:
      common.cpu_sized(c, losses)
    c.abn.branch = "conv4_2"  # an 8x8 attention map at 64 px (the last block's would be 4x4)
    if arg == "synthetic_parts":  # the data's 'attributes': each part's pattern, 3 classes
      c.abn.task_classes = (3,) * c.data.synthetic.num_parts
    return c
  if arg in CIFAR:
    # The official code's runs (its README and logs): batch 128, SGD 0.1, 300 epochs, decays at 150 and 225; its
    # attention map is a 3x3 convolution.
    net = CIFAR[arg]
    common.use_dataset(c, "cifar100")
    c.model.update(backbone=net["backbone"], block=net.get("block", ""), dropout=net.get("dropout"))
    c.abn.map_kernel = 3
    c.data.batch_size, c.data.eval_batch_size = 128, 500
    c.phases.main = common.phase(epochs=300, lr=0.1, weight_decay=net["wd"], new_layer_lr_mult=1.0, losses=losses)
    c.phases.main.schedule.update(kind="step", boundaries=(150, 225), decay=net["decay"])
    return c
  if arg == "landmarks":
    common.landmark_recipe(c, losses={"att": 0.25, "per": 1.0})
    c.abn.branch = "pool5"  # the 7x7 map; the frozen extractor is then every conv block, the head trains
    return c
  if arg == "celeba":
    # The schedule is this project's (the paper gives none for the multi-task variant): fine-tuning as for the
    # fine-grained presets, larger batches for the smaller, more numerous images.
    common.use_dataset(c, "celeba")
    c.abn.task_classes = (2,) * 40
    c.model.backbone, c.model.require_pretrained = "resnet101", True
    c.data.batch_size, c.data.eval_batch_size = 64, 256
    c.phases.main = common.phase(epochs=10, lr=0.01, losses=losses)
    c.phases.main.schedule.warmup_epochs = 0.5
    return c
  if arg == "imagenet_resnet50":
    # The official code's ImageNet transforms: RandomResizedCrop(224) and a flip; evaluation: resize 256, centre 224.
    c.data.update(
      source="tfds",
      name="imagenet2012",
      num_classes=1000,
      image_size=224,
      resize_size=256,
      batch_size=256,
      eval_batch_size=500,
      eval_split="validation",
    )
    c.data.augment.crop = "random_resized"
    c.model.backbone = "resnet50"
    c.abn.map_kernel = 3
    c.phases.main = common.phase(epochs=90, lr=0.1, weight_decay=1e-4, new_layer_lr_mult=1.0, losses=losses)
    c.phases.main.schedule.update(kind="step", boundaries=(30, 60), decay=0.1)
    return c
  if arg not in FINE_GRAINED:
    raise ValueError(f"configs/abn.py has no preset {arg!r}; its presets: {', '.join(p for p in PRESETS if p)}")
  dataset, frozen = FINE_GRAINED[arg]
  common.use_dataset(c, dataset)
  c.model.backbone, c.model.require_pretrained = "resnet50", True
  c.data.batch_size, c.data.eval_batch_size = 16, 64
  if frozen:
    c.model.freeze_features = True  # the extractor (up to layer3) keeps its ImageNet weights and statistics
    c.phases.main = common.phase(trains="branches", epochs=30, lr=0.01, losses={"att": 0.25, "per": 1.0})
  else:
    c.phases.main = common.phase(epochs=40, lr=0.001, losses=losses)
  c.phases.main.schedule.warmup_epochs = 1.0
  return c
