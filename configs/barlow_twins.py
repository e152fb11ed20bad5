r"""Barlow Twins (Zbontar et al. 2021): push the cross-correlation of two views' embeddings
towards the identity.

  python -m jaxssl.train --config=configs/barlow_twins.py:fashion_mnist --workdir=/tmp/barlow

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/barlow_twins.py:fashion_mnist,resnet18`):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: projector
                 3 x 1024 (the loss's redundancy term wants a wide projector).
  imagenet       The official README run (`main.py` defaults, 16 GPUs): ResNet-50, projector
                 8192-8192-8192, lambda 0.0051, LARS lr 0.2 x B/256 for weights at batch 2048,
                 wd 1e-6, 10 warmup epochs, cosine to 0.001 x peak, 1000 epochs, the loss scaled
                 by 1/16 as the run's gradient was; data is a prepared TFDS `imagenet2012`;
                 biases and BN parameters train at lr 0.0048 x B/256
                 (`optim.norm_bias_lr_factor` = 0.0048 / 0.2) and skip decay and adaptation.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "test,resnet18_small")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "barlow_twins"
  # Eq. 1's off-diagonal weight (the official code uses 0.0051); loss_scale multiplies the
  # differentiated loss (jaxssl/methods/barlow_twins.py: the reference run's 1/16 gradient).
  c.barlow_twins = dict(lambda_=5e-3, loss_scale=1.0)
  c.head = dict(hidden_dim=8192, out_dim=8192, num_layers=3, use_bn=True)  # the projector
  c.augment = config_lib.byol_augment(crop_scale=(0.2, 1.0), flip_prob=0.0)
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 1e-4

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.head = dict(hidden_dim=1024, out_dim=1024, num_layers=3, use_bn=True)
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.augment = config_lib.byol_augment(crop_scale=(0.08, 1.0), flip_prob=0.5)
    c.batch_size = 2048
    c.total_epochs = 1000.0
    c.optim.name = "lars"
    c.optim.base_lr = 0.2
    c.optim.lr_scaling = "linear"
    c.optim.weight_decay = 1e-6  # main.py's --weight-decay default (the paper text: 1.5e-6)
    c.optim.norm_bias_lr_factor = 0.0048 / 0.2  # the official learning-rate-biases
    c.optim.warmup_steps = 6256  # 10 epochs of 1,281,167 images at batch 2048
    c.optim.end_lr_factor = 0.001  # main.py adjust_learning_rate: cosine to 0.001 x base
    # The README run (main.py defaults, 16 GPUs): --lambd 0.0051, and 1/16 of the true gradient
    # (non-autograd all_reduce of the correlation + DDP averaging over 16 ranks).
    c.barlow_twins = dict(lambda_=0.0051, loss_scale=1.0 / 16)
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.checkpoint.keep_every = 25_000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.byol_augment(crop_scale=(0.5, 1.0), flip_prob=0.0)
    c.head = dict(hidden_dim=32, out_dim=16, num_layers=3, use_bn=True)
  else:
    raise ValueError(
      f"Unknown barlow_twins preset {preset!r}; choose fashion_mnist, imagenet or test."
    )
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
