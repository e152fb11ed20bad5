r"""BYOL (Grill et al. 2020): online network predicts an EMA target network's projection.

  python -m jaxssl.train --config=configs/byol.py:fashion_mnist --workdir=/tmp/byol

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/byol.py:fashion_mnist,resnet18`):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: heads
                 512 -> 128, target momentum 0.99 (the short run moves the target faster).
  imagenet       The official default run for pods (`main_loop.py`: 1000 epochs, batch 4096;
                 `configs/byol.py` 1000-epoch presets): ResNet-50, projector and predictor
                 4096 -> 256, tau 0.996 -> 1 on a cosine, LARS lr 0.2 x B/256, wd 1.5e-6,
                 10 warmup epochs; data is a prepared TFDS `imagenet2012`. (The 300-epoch
                 presets are lr 0.3, wd 1e-6, tau 0.99.)
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`. Every preset uses the official MLPs (output Dense
without bias, `final_bias=False`) and loss (the two directions summed, `byol.directions='sum'`).
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "test,resnet18_small")


def projector(*, hidden_dim: int, out_dim: int) -> dict:
  """The `config.head` section (BYOL's projector g): Dense -> BN -> ReLU -> Dense without bias."""
  return dict(hidden_dim=hidden_dim, out_dim=out_dim, num_layers=2, use_bn=True, final_bias=False)


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "byol"
  # Paper defaults: tau_base 0.996; projector and predictor Linear(4096)-BN-ReLU-Linear(256),
  # the last Linear without bias (utils/networks.py MLP). The loss sums both directions
  # (byol_experiment.py: repr_loss = l(p1, t2) + l(p2, t1)).
  c.byol = dict(
    base_momentum=0.996,
    directions="sum",
    predictor=dict(hidden_dim=4096, num_layers=2, final_bias=False),
  )
  c.head = projector(hidden_dim=4096, out_dim=256)
  c.augment = config_lib.byol_augment(crop_scale=(0.2, 1.0), flip_prob=0.0, brightness_mode="add")
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 1e-4

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.byol.base_momentum = 0.99
    c.head = projector(hidden_dim=512, out_dim=128)
    c.byol.predictor.hidden_dim = 512
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.augment = config_lib.byol_augment(
      crop_scale=(0.08, 1.0), flip_prob=0.5, brightness_mode="add"
    )
    c.batch_size = 4096
    c.total_epochs = 1000.0  # main_loop.py's pretrain_epochs
    c.optim.name = "lars"
    c.optim.base_lr = 0.2
    c.optim.lr_scaling = "linear"
    c.optim.weight_decay = 1.5e-6
    c.optim.warmup_steps = 3127  # schedules.py: 10 epochs * 1,281,167 // 4096
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep_every = 10000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.byol_augment(crop_scale=(0.5, 1.0), flip_prob=0.0, brightness_mode="add")
    c.head = projector(hidden_dim=32, out_dim=16)
    c.byol.predictor.hidden_dim = 32
  else:
    raise ValueError(f"Unknown byol preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
