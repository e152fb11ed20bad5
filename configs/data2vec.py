r"""data2vec for images (Baevski et al. 2022): regress an EMA teacher's averaged top-K
layer-normalised block outputs at masked patches.

  python -m jaxssl.train --config=configs/data2vec.py:fashion_mnist --workdir=/tmp/data2vec

Presets (the part after ':'; append ',<backbone>' to swap the ViT; data2vec needs a ViT):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: vit_mnist (16 patches, 10 masked at
                 random: blocks degenerate on a 4x4 grid), top 2 of 4 blocks, teacher momentum
                 0.99 -> 0.999 over 1000 steps (the short run needs a faster teacher than the
                 paper's); the official targets and loss (as every preset: LN of each block,
                 average, LN; smooth L1 beta 2 as an element mean).
  imagenet       The official ViT-B/16 800-epoch command (data2vec_vision `beit/README.md`):
                 BEiT block-wise masks of 120 of 196 patches (blocks >= 16), top K = 6 of 12
                 blocks, smooth L1 with beta 2, teacher momentum constant 0.9998, AdamW lr
                 2e-3 at batch 2048 (10 warmup epochs, cosine to 1e-5), wd 0.05, global grad
                 clip 3.0, drop path 0.25 (student), exact GELU, 800 epochs. Not reproduced:
                 layer scale 1e-4 and attention dropout 0.05 (no ViT option), the shared
                 relative position bias and [cls] of the BEiT backbone (sin-cos absolute
                 positions here), colour jitter 0.4 and bicubic crops. Data is a prepared
                 TFDS `imagenet2012`.
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
    masking="random",  # or 'block' (BEiT's block-wise masks of num_masked patches)
    mask_ratio=0.6,  # 'random' masking
    num_masked=config_dict.placeholder(int),  # 'block' masking: patches per image
    min_block=16,  # 'block' masking: the smallest block
    top_k=6,
    # The official vision code (engine_for_cyclical.py): LN each block, average, LN again,
    # and F.smooth_l1_loss's element mean.
    target_norm="layer",
    loss_reduction="mean",
    loss_beta=2.0,
    base_momentum=0.999,
    end_momentum=0.9999,
    anneal_steps=config_dict.placeholder(int),  # None: the whole run
  )
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
    c.optim.warmup_steps = 6_256  # 10 epochs of 1,281,167 images at batch 2048
    c.optim.end_lr_factor = 0.005  # min_lr 1e-5 of the peak 2e-3
    c.optim.grad_clip_norm = 3.0
    c.optim.grad_clip_mode = "global"
    c.optim.decay_mask = "rank_no_bias"  # BEiT-style groups: no decay on biases or 1-D params
    # BEiT's MaskingGenerator(120, min 16, max 196); EMA constant (--ema_start_at 0).
    c.data2vec.update(
      masking="block", num_masked=120, min_block=16, base_momentum=0.9998, end_momentum=0.9998
    )
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
  if preset == "imagenet":
    c.model.drop_path = 0.25  # linear over depth, student only (the teacher runs train=False)
    c.model.gelu_approximate = False  # timm's exact GELU
  c.lock()
  return c
