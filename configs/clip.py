r"""CLIP (Radford et al. 2021): image tower + text tower, softmax contrastive loss.

  python -m jaxssl.train --config=configs/clip.py:tuxpaint --workdir=/tmp/clip
  python -m jaxssl.evaluate --workdir=/tmp/clip

Presets (the part after ':'; append ',<backbone>' to swap the image tower, e.g.
`configs/clip.py:tuxpaint,vit_mu4`):
  tuxpaint  The CPU benchmark: 785 Tux Paint stamps with captions + keywords (Debian
            tuxpaint-stamps-default), 32x32 RGB, ViT on a 4x4 grid of 8x8 patches, 2-block text
            transformer.
  emoji     The same towers on 1,870 Noto Color Emoji with their Unicode names + group /
            subgroup keywords (Debian fonts-noto-color-emoji, unicode-data), 9 groups; 64
            text bytes (keywords + name fit in 64 for 99% of them), 1,200 steps.
  paper     The paper's recipe for pods (sec. 2.5, tables 19-20): ViT-B/16 at 224, text
            transformer 12 x 512 (8 heads, 76 tokens), embed dim 512, batch 32,768, AdamW
            lr 5e-4 (b2 0.98) wd 0.2, 32 epochs, 2k warmup steps, temperature init 0.07
            clipped at 100. Data: a prepared TFDS image-text dataset (see below).
  test      Tiny and fast, used by the test suite: the 5,573 DejaVu Sans characters that
            matplotlib bundles, with their Unicode names + category keywords (pip only, no
            Debian package; jaxssl/data/glyphs.py), 4 classes, at 8x8; 24 text bytes.
configs/siglip.py builds on this file (same towers and data; its own loss and recipe).
Image-text datasets: jaxssl/data/image_text.py; a catalog dataset works if it has 'image',
'label' and the text features named in image_text.text_fields.
"""

import math

import ml_collections

from jaxssl import config_lib

# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("tuxpaint", "emoji", "paper", "test", "tuxpaint,vit_mu4", "test,vit_test")

# 32x32 images: a 4x4 grid of 8x8 patches, width 128, 4 blocks.
_TUXPAINT_VIT = dict(
  name="vit", width=128, depth=4, mlp_dim=256, num_heads=4, patch_size=8, pool="gap"
)
# The 32x32 image-caption sets of the CPU presets: dataset, text bytes, steps at batch 128.
_CPU_SETS = {
  "tuxpaint": dict(
    data="tuxpaint_stamps", max_len=48, total_steps=600
  ),  # ~120 epochs of the 633 training pairs
  "emoji": dict(
    data="emoji", max_len=64, total_steps=1200
  ),  # ~100 epochs of the 1,481 training pairs
}


def image_text_config(method: str, arg: str) -> ml_collections.ConfigDict:
  """The config both image-text methods share; `method` is 'clip' or 'siglip'."""
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = method
  c.clip = dict(init_temperature=0.07, max_scale=100.0)
  # Zhai et al. 2023, sec. 3.2: t' = log 10, b = -10.
  c.siglip = dict(init_t_prime=math.log(10.0), init_bias=-10.0)
  # Tags first: truncation then only shortens the sentence, and a class name such as 'animals'
  # sits at the start of the text as in a zero-shot prompt.
  c.image_text = dict(embed_dim=128, text_fields=("keywords", "caption"))
  c.tokenizer = "byte"  # jaxssl.data.tokenizer.get_tokenizer: 'byte' or a tokenizer.json path
  c.text_model = dict(width=128, depth=4, num_heads=4, mlp_dim=256, max_len=48)
  # CLIP's only augmentation is a random square crop (sec. 2.5); mild scale range here.
  c.augment = dict(crop_scale=(0.8, 1.0), flip_prob=0.0)
  c.optim.name = "adamw"
  c.optim.base_lr = 5e-4 if method == "clip" else 1e-3
  c.optim.lr_scaling = "none"
  # CLIP: PyTorch AdamW's wd 0.2, already optax's convention (decay lr_t x wd x p). SigLIP's
  # wd 1e-4 is big_vision's (big_vision/optax.py::make: add_decayed_weights(wd) after
  # scale(lr), so the decay is s_t x wd x p, not times lr): wd / lr = 1e-4 / 1e-3 = 0.1 here.
  c.optim.weight_decay = 0.2 if method == "clip" else 1e-4 / 1e-3
  c.optim.b2 = 0.98 if method == "clip" else 0.95
  c.model = ml_collections.ConfigDict()

  if preset in _CPU_SETS:
    cpu_set = _CPU_SETS[preset]
    c.data.name = cpu_set["data"]
    c.data.image_size = 32
    c.data.worker_count = 1
    c.text_model = dict(width=128, depth=2, num_heads=4, mlp_dim=256, max_len=cpu_set["max_len"])
    c.batch_size = 128
    c.total_steps = cpu_set["total_steps"]
    c.optim.base_lr = 1e-3
    c.optim.weight_decay = 0.05
    c.optim.warmup_steps = 50
    c.log_every_steps = 50
    c.checkpoint.every_steps = 300
    model = config_lib.backbone(backbone, image_size=32) if backbone else _TUXPAINT_VIT
  elif preset == "paper":
    c.data.name = "laion400m"  # any prepared TFDS dataset with image, label, caption
    c.image_text.text_fields = ("caption",)
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 32_768
    c.total_epochs = 32.0
    c.optim.warmup_steps = 2000
    # CLIP (open_clip) and big_vision decay weight matrices only, never biases or gains.
    c.optim.decay_mask = "rank_no_bias"
    if method == "clip":
      c.optim.eps = 1e-6  # CLIP paper, table 19 (Adam epsilon 1e-6)
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep_every = 10_000
    c.augment = dict(crop_scale=(0.9, 1.0), flip_prob=0.0)
    c.image_text.embed_dim = 512
    c.text_model = dict(width=512, depth=12, num_heads=8, mlp_dim=2048, max_len=76)
    if method == "siglip":
      # Zhai et al. 2023, sec. 4: 16 text tokens, embed 768 with B/16, batch 32k, lr 1e-3.
      c.text_model.update(width=768, num_heads=12, mlp_dim=3072, max_len=16)
      c.image_text.embed_dim = 768
      # Global-norm clip 1.0, the only public SigLIP config's (big_vision siglip_lit_coco.py).
      c.optim.grad_clip_norm = 1.0
      # big_vision's wd mask: kernels only, so not the embedding / position tables.
      c.optim.no_decay = (r"token_embedding$", r"pos_embedding$")
    model = config_lib.backbone(backbone or "vit_b16", image_size=224)
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.data.name = "dejavu_glyphs"
    c.image_text.embed_dim = 16
    c.text_model = dict(width=32, depth=1, num_heads=2, mlp_dim=64, max_len=24)
    model = config_lib.backbone(backbone, image_size=c.data.image_size)
  else:
    raise ValueError(f"Unknown {method} preset {preset!r}; choose tuxpaint, emoji, paper or test.")
  c.model = ml_collections.ConfigDict(dict(model))
  c.lock()
  return c


def get_config(arg: str = "tuxpaint"):
  return image_text_config("clip", arg)
