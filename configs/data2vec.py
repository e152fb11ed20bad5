r"""data2vec for images (Baevski et al. 2022): regress an EMA teacher's averaged top-K
instance-normalised block outputs at masked patches.

  python -m jaxssl.train --config=configs/data2vec.py:fashion_mnist --workdir=/tmp/data2vec

Presets (the part after ':'; append ',<backbone>' to swap the ViT; data2vec needs a ViT):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: vit_mnist (16 patches, 10 masked), top 2
                 of 4 blocks, teacher momentum 0.99 -> 0.999 over 1000 steps (the short run
                 needs a faster teacher than the paper's).
  imagenet       The paper's ViT-B/16 recipe (sec. 4.1): mask 60% of patches, top K = 6 of 12
                 blocks, smooth L1 with beta 2, teacher momentum 0.999 -> 0.9999 annealed over
                 the run, AdamW lr 2e-3 at batch 2048 (cosine, 40 warmup epochs), wd 0.05,
                 800 epochs. Not reproduced: BEiT block-wise masking (masks are uniformly
                 random at the same ratio), layer-scale / relative positions of the BEiT
                 backbone. Data is a prepared TFDS `imagenet2012`.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
"""

import ml_collections
from ml_collections import config_dict

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "data2vec"
  c.data2vec = dict(
    mask_ratio=0.6,
    top_k=6,
    loss_beta=2.0,
    base_momentum=0.999,
    end_momentum=0.9999,
    anneal_steps=config_dict.placeholder(int),
  )  # None: the whole run
  c.augment = ml_collections.ConfigDict(dict(crop_scale=(0.08, 1.0), flip_prob=0.5))
  c.optim.name = "adamw"
  c.optim.base_lr = 2e-3 / 8  # 2e-3 at batch 2048, x B/256 linear scaling
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 0.05

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.augment = ml_collections.ConfigDict(dict(crop_scale=(0.2, 1.0), flip_prob=0.5))
    c.optim.base_lr = 1e-3
    c.data2vec.update(top_k=2, base_momentum=0.99, end_momentum=0.999, anneal_steps=1000)
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 2048
    c.total_epochs = 800.0
    c.optim.warmup_steps = 25_020  # 40 epochs of 1,281,167 images at batch 2048
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.checkpoint.keep_every = 25_000
    backbone = backbone or "vit_b16"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = ml_collections.ConfigDict(dict(crop_scale=(0.5, 1.0), flip_prob=0.0))
    # vit_test has 2 blocks; the momentum reaches its end value at step 4 of 6.
    c.data2vec.update(top_k=2, anneal_steps=4)
  else:
    raise ValueError(f"Unknown data2vec preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  c.lock()
  return c
