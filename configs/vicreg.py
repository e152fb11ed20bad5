r"""VICReg (Bardes, Ponce & LeCun 2022): variance-invariance-covariance regularisation.

  python -m jaxssl.train --config=configs/vicreg.py:fashion_mnist --workdir=/tmp/vicreg

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/vicreg.py:fashion_mnist,resnet18`):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: expander
                 3 x 1024 (the loss's covariance term wants a wide expander).
  imagenet       The paper's recipe for pods (sec. 4.1 and the official README): ResNet-50,
                 expander 8192-8192-8192, coefficients 25 / 25 / 1, LARS lr 0.2 x B/256 at batch
                 2048, wd 1e-6, 10 warmup epochs, cosine to 0.001 x peak, 1000 epochs; data is a
                 prepared TFDS `imagenet2012`.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "test,resnet18_small")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "vicreg"
  # Eq. 6 with lambda = mu = 25, nu = 1; jaxssl.losses.vicreg averages the two variance terms
  # as the official code does.
  # variance_terms 'mean': the official code halves each view's variance term (main_vicreg.py).
  c.vicreg = dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, variance_terms="mean")
  c.head = dict(hidden_dim=8192, out_dim=8192, num_layers=3, use_bn=True)  # the expander
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
    c.optim.weight_decay = 1e-6
    c.optim.warmup_steps = 6256  # 10 epochs of 1,281,167 images at batch 2048
    c.optim.end_lr_factor = 0.001  # main_vicreg.py: cosine to end_lr = 0.001 x base_lr
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.checkpoint.keep_every = 25_000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.byol_augment(crop_scale=(0.5, 1.0), flip_prob=0.0)
    c.head = dict(hidden_dim=32, out_dim=16, num_layers=3, use_bn=True)
  else:
    raise ValueError(f"Unknown vicreg preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
