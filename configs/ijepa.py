r"""I-JEPA (Assran et al. 2023): predict EMA-target patch representations of 4 target blocks
from one context block.

  python -m jaxssl.train --config=configs/ijepa.py:fashion_mnist --workdir=/tmp/ijepa

Presets (the part after ':'; append ',<backbone>' to swap the ViT; I-JEPA needs a ViT):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: vit_mnist with 4x4 patches (a 7x7 grid:
                 7x7 patches leave a 4x4 grid, too coarse for 4 target blocks of 15-20%), targets
                 of 6 patches per block, 10 context patches, predictor 64 wide x 2 blocks.
  imagenet       The official ViT-H/14 recipe (ijepa `configs/in1k_vith14_ep300.yaml`): 224 px
                 (16x16 grid), smooth-L1 loss, AdamW (0.9, 0.999) lr 1e-3 x B/2048 at batch
                 2048, 40 warmup epochs, cosine to 1e-6, wd cosine 0.04 -> 0.4, EMA 0.996 -> 1
                 linear, predictor 384 wide x 12 blocks x 16 heads (the encoder's), exact GELU,
                 300 epochs, crop scale (0.3, 1). Not reproduced: the warmup starts at 0, not
                 at the official 2e-4. Fixed mask sizes: 35 patches per target block (the
                 smallest block the ranges allow) and 84 context patches (the 10th percentile
                 of the context left after removing the targets; smaller draws are redrawn),
                 where the official collator truncates to the batch minimum. Data is a
                 prepared TFDS `imagenet2012`.
  test           Tiny and fast: used by the test suite.
                 `imagenet,vit_b16` is the ViT-B/16 variant (14x14 grid: 24 target patches per
                 block, 62 context patches, 12 predictor heads), same optimisation.
Backbones: see `jaxssl.config_lib.BACKBONES` (ViT-H/14 is not in the table: the imagenet
preset builds it from its fields, in bfloat16).
"""

import ml_collections

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "imagenet,vit_b16")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "ijepa"
  # Paper defaults (sec. 4, appendix A.1); the loss is the official code's (src/train.py).
  c.ijepa = dict(
    base_momentum=0.996,
    end_momentum=1.0,
    loss="smooth_l1",  # F.smooth_l1_loss (beta 1, element mean); 'l2' is the paper's eq. 1
    num_targets=4,
    target_scale=(0.15, 0.2),
    target_aspect=(0.75, 1.5),
    context_scale=(0.85, 1.0),
    target_patches=35,
    context_patches=84,
    predictor=dict(width=384, depth=12, num_heads=12, mlp_dim=1536),
  )
  c.augment = ml_collections.ConfigDict(dict(crop_scale=(0.3, 1.0), flip_prob=0.0))
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 0.04
  c.optim.b2 = 0.95

  patch_size = None
  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    patch_size = 4
    c.ijepa.update(target_patches=6, context_patches=10)
    c.ijepa.predictor.update(width=64, depth=2, num_heads=4, mlp_dim=128)
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 2048
    c.total_epochs = 300.0
    c.optim.base_lr = 1e-3 / 8  # the paper's 1e-3 at batch 2048, x B/256 linear scaling
    c.optim.lr_scaling = "linear"
    c.optim.warmup_steps = 25_023  # 40 epochs of 1,281,167 images at batch 2048
    c.optim.end_lr_factor = 1e-3  # final_lr 1e-6 of the peak 1e-3
    c.optim.weight_decay_end = 0.4  # cosine 0.04 -> 0.4 over the run
    c.optim.b2 = 0.999  # torch AdamW's default betas (src/helper.py)
    c.optim.warmup_start_factor = 0.2  # start_lr 2e-4 of the peak 1e-3 (in31k_vith14_ep300.yaml)
    c.optim.decay_mask = "rank_no_bias"  # src/helper.py: no decay for biases and 1-D params
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.checkpoint.keep_every = 25_000
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment.crop_scale = (0.5, 1.0)
    # vit_test on 8x8 digits: a 4x4 grid; 1-patch targets, 3 context patches.
    c.ijepa.update(target_patches=1, context_patches=3)
    c.ijepa.predictor.update(width=16, depth=1, num_heads=2, mlp_dim=32)
  else:
    raise ValueError(f"Unknown ijepa preset {preset!r}; choose fashion_mnist, imagenet or test.")
  if preset == "imagenet" and not backbone:
    # ViT-H/14 (width 1280, depth 32, MLP 5120, 16 heads), average-pooled.
    c.model = ml_collections.ConfigDict(
      dict(
        name="vit",
        width=1280,
        depth=32,
        mlp_dim=5120,
        num_heads=16,
        patch_size=14,
        pool="gap",
        dtype="bfloat16",
      )
    )
    c.ijepa.predictor.num_heads = 16  # the encoder's heads (src/helper.py `init_model`)
  else:
    c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
    if patch_size is not None:
      c.model.patch_size = patch_size
    if preset == "imagenet" and c.model.get("variant", "").endswith("/16"):
      # A 14x14 grid (e.g. the ViT-B/16 variant): the smallest target block has 24 patches,
      # the 10th percentile of the context is 62.
      c.ijepa.update(target_patches=24, context_patches=62)
  if preset == "imagenet":
    c.model.gelu_approximate = False  # exact GELU, encoder and predictor
  c.lock()
  return c
