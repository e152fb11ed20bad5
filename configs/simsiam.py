r"""SimSiam (Chen & He 2021): Siamese views, predictor + stop-gradient, no negatives, no EMA.

  python -m jaxssl.train --config=configs/simsiam.py:fashion_mnist --workdir=/tmp/simsiam

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/simsiam.py:fashion_mnist,resnet18`):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: projector
                 3 x 512, predictor 512 -> 128 -> 512, AdamW (as the other ViT presets).
  imagenet       The paper's recipe (sec. 3 and 4): ResNet-50, projector 3 x 2048 (BN on every
                 layer, the output BN without affine), predictor 2048 -> 512 -> 2048, SGD
                 momentum 0.9, lr 0.05 x B/256 at batch 512 on a cosine, wd 1e-4, 100 epochs,
                 no warmup, weight decay on every parameter, the predictor at the fixed
                 initial LR (sec. 4.1, `--fix-pred-lr`); data is a prepared TFDS
                 `imagenet2012`.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "test,resnet18_small")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "simsiam"
  # Paper defaults: the prediction MLP is a 4x bottleneck (sec. 3, "Prediction MLP").
  c.simsiam = dict(predictor=dict(hidden_dim=512, num_layers=2))
  c.head = dict(hidden_dim=2048, out_dim=2048, num_layers=3, use_bn=True, final_bn=True)
  # MoCo v2's augmentation (SimSiam sec. 3): blur p = 0.5 on both views, no solarization.
  c.augment = config_lib.simclr_augment(crop_scale=(0.2, 1.0), flip_prob=0.0)
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 1e-4

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.head.update(hidden_dim=512, out_dim=512)
    c.simsiam.predictor.hidden_dim = 128
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.augment = config_lib.simclr_augment(crop_scale=(0.2, 1.0), flip_prob=0.5)
    c.batch_size = 512
    c.total_epochs = 100.0
    c.optim.name = "sgd"
    c.optim.base_lr = 0.05
    c.optim.lr_scaling = "linear"
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.warmup_steps = 0
    c.optim.decay_mask = "all"  # main_simsiam.py: SGD(weight_decay=1e-4) over every parameter
    c.optim.constant_lr = (r"^predictor/",)  # --fix-pred-lr: the predictor keeps init_lr
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    backbone = backbone or "resnet50"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.head.update(hidden_dim=32, out_dim=32)
    c.simsiam.predictor.hidden_dim = 8
  else:
    raise ValueError(f"Unknown simsiam preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
