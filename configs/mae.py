r"""MAE (He et al. 2022): mask 75% of the patches, reconstruct their normalised pixels.

  python -m jaxssl.train --config=configs/mae.py:fashion_mnist --workdir=/tmp/mae

Presets (the part after ':'; append ',<backbone>' to swap the ViT, e.g.
`configs/mae.py:fashion_mnist,vit_mu4`; MAE needs a ViT backbone):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: 7x7
                 patches (16 per image, 4 visible), decoder 64 wide x 2 blocks.
  imagenet       The paper's recipe for pods (sec. 4 and table 8 of appendix A.1; the official
                 `PRETRAIN.md` command): ViT-B/16 with a [cls] token (carried through the
                 decoder; the linear probe reads the final-normed [cls]) and exact GELU,
                 decoder 512 wide x 8 blocks, mask 0.75, norm_pix, AdamW (b2 0.95, wd 0.05),
                 base lr 1.5e-4 x B/256 at batch 4096, 800 epochs with 40 warmup; data is a
                 prepared TFDS `imagenet2012`. The CPU presets keep 'gap' pooling (MAE: average
                 pooling "works similarly"); `--config.model.pool=cls` switches.
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`.
"""

import ml_collections

from jaxssl import config_lib


def _mae_augment(*, flip_prob):
  # MAE's pretraining augmentation is RandomResizedCrop(scale=(0.2, 1)) + horizontal flip only
  # (appendix A.1); colour jitter, blur etc. are off by construction in the method.
  return ml_collections.ConfigDict(dict(crop_scale=(0.2, 1.0), flip_prob=flip_prob))


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test", "fashion_mnist,vit_mu4", "test,vit_mu4")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "mae"
  # Paper defaults: mask 75%, per-patch normalised pixel targets, 8-block 512-wide decoder
  # with 16 heads and MLP ratio 4.
  c.mae = dict(
    mask_ratio=0.75,
    norm_pix=True,
    decoder_width=512,
    decoder_depth=8,
    decoder_heads=16,
    decoder_mlp_dim=2048,
  )
  c.augment = _mae_augment(flip_prob=0.5)
  c.optim.name = "adamw"
  c.optim.base_lr = 1.5e-4  # x B/256 (linear scaling), as the paper's blr
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 0.05
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.total_epochs = 10.0  # SimCLR's Fashion-MNIST budget: ~1 s/step on 2 shared CPU cores
    c.optim.warmup_steps = 235  # one epoch of 60k at batch 256
    c.mae.update(decoder_width=64, decoder_depth=2, decoder_heads=4, decoder_mlp_dim=256)
    c.checkpoint.every_steps = 1000
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 4096
    c.total_epochs = 800.0
    c.optim.warmup_steps = 12_512  # 40 epochs of 1,281,167 images at batch 4096
    c.optim.decay_mask = "rank_no_bias"  # timm optim_factory.add_weight_decay: no decay on biases
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.checkpoint.keep_every = 25_000
    backbone = backbone or "vit_b16"
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = _mae_augment(flip_prob=0.0)
    c.mae.update(decoder_width=16, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=32)
  else:
    raise ValueError(f"Unknown mae preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  if preset == "imagenet":
    c.model.pool = "cls"  # models_mae.py's cls_token; the probe's feature (main_linprobe.py)
    c.model.gelu_approximate = False  # timm's exact nn.GELU, in the decoder too
  c.lock()
  return c
