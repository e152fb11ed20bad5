r"""DINO (Caron et al. 2021): self-distillation of a multi-crop student into an EMA teacher.

  python -m jaxssl.train --config=configs/dino.py:fashion_mnist --workdir=/tmp/dino

Presets (the part after ':'; append ',<backbone>' to swap the ViT, e.g.
`configs/dino.py:test,vit_mu4`; crops.local_size must be a multiple of its patch size):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: vit_mnist (7x7 patches), 2 global 28px
                 + 4 local 14px crops, head 512 -> 128 -> 1024 prototypes; teacher
                 temperature 0.04 with no warmup, DINO's code default (the paper's warmup to
                 0.07 collapsed this preset to uniform targets: docs/results.md "Method zoo").
  imagenet       The README's ViT-S/16 "full command" (76.0% linear; main_dino.py defaults
                 otherwise): [cls]-pooled ViT-S/16 with learned (bicubic-resized) position
                 embeddings, exact GELU and drop path 0.1 on the student only; 2 global 224px
                 crops of scale (0.4, 1) + 8 local 96px of (0.05, 0.4); head 2048 -> 256 ->
                 65536 with a trained prototype scale (norm_last_layer false); teacher momentum
                 0.996 -> 1 (cosine), teacher temperature 0.04 -> 0.07 over 30 epochs, center
                 momentum 0.9, last layer frozen for epoch 1 (optim.frozen_until); AdamW lr
                 5e-4 x B/256 at batch 1024, 10 warmup epochs, cosine to 1e-6, weight decay
                 cosine 0.04 -> 0.4, each gradient tensor clipped to norm 3.0, 300 epochs.
  test           Tiny and fast: used by the test suite.
"""

import ml_collections

from jaxssl import config_lib

# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test")
LAST_LAYER = r"last_layer_"  # the prototype layer of every DINO head: last_layer_v, last_layer_g


def dino_sections(c: ml_collections.ConfigDict, section: str) -> None:
  """Adds DINO's paper defaults: `c.<section>` (teacher), `c.head`, `c.crops` and the optimizer
  (this file and configs/ibot.py, which loads it)."""
  c[section] = ml_collections.ConfigDict(
    dict(
      base_momentum=0.996,
      student_temp=0.1,
      warmup_teacher_temp=0.04,
      teacher_temp=0.07,
      teacher_temp_warmup_epochs=30.0,
      center_momentum=0.9,
      # The older freeze (zero gradient, AdamW still decays V): 0, kept so recorded runs resume.
      freeze_last_layer_epochs=0.0,
    )
  )
  c.head = ml_collections.ConfigDict(
    dict(out_dim=65536, hidden_dim=2048, bottleneck_dim=256, num_layers=3, norm_last_layer=True)
  )
  c.crops = ml_collections.ConfigDict(
    dict(
      global_size=224,
      local_size=96,
      num_local=8,
      global_scale=(0.4, 1.0),
      local_scale=(0.05, 0.4),
      flip_prob=0.5,
      # torchvision ColorJitter(0.4, 0.4, 0.2, 0.1), main_dino.py DataAugmentationDINO.
      jitter=(0.4, 0.4, 0.2, 0.1),
    )
  )
  # Where the crops' flip, colour, blur and solarize run (config_lib.simclr_augment).
  c.augment = ml_collections.ConfigDict(dict(placement="auto"))
  c.optim.name = "adamw"
  c.optim.base_lr = 5e-4  # x B/256
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 0.04
  c.optim.grad_clip_norm = 3.0
  # DINO's freeze_last_layer (1 epoch): `p.grad = None` for every "last_layer" parameter, so
  # AdamW neither updates nor decays them and their state waits (main_dino.py, utils.py).
  c.optim.frozen_until = ((LAST_LAYER, 1.0),)


def dino_preset(c: ml_collections.ConfigDict, section: str, preset: str, backbone_name: str) -> str:
  """The fashion_mnist / imagenet / test settings DINO and iBOT share (sets c.model); returns
  the backbone name."""
  if preset == "fashion_mnist":
    backbone_name = config_lib.fashion_mnist_preset(c, backbone_name)
    c.head.update(out_dim=1024, hidden_dim=512, bottleneck_dim=128)
    # 28px images: locals of 5% of the area would be ~6px, so the local scale starts at 0.1.
    c.crops.update(
      global_size=28,
      local_size=14,
      num_local=4,
      local_scale=(0.1, 0.4),
      jitter=(0.4, 0.4, 0.4, 0.1),
    )
    # DINO's own default (main_dino.py: 0.04, no warmup; "increase this slightly if needed").
    # The paper's 0.04 -> 0.07 warmup, shrunk to a short run, reached 0.07 while the features
    # were still near-identical across images and the teacher went uniform (docs/results.md, "Method
    # zoo"). The last layer stays frozen for DINO's 1 epoch.
    c[section].update(warmup_teacher_temp=0.04, teacher_temp=0.04, teacher_temp_warmup_epochs=0.0)
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 1024
    c.total_epochs = 100.0
    c.optim.warmup_steps = 12_512  # 10 epochs of 1,281,167 images at batch 1024
    # min_lr 1e-6 after the cosine, relative to the peak 5e-4 x 1024 / 256.
    c.optim.end_lr_factor = 1e-6 / (c.optim.base_lr * c.batch_size / 256)
    # utils.clip_gradients: each parameter tensor on its own; wd cosine 0.04 -> 0.4.
    c.optim.update(grad_clip_mode="per_tensor", weight_decay_end=0.4)
    # utils.get_params_groups: no decay for names ending in .bias and for 1-D params, which in
    # our names are the biases (q/v biases are 2-D here) and the norms; the last layer's g and
    # iBOT's mask token are decayed there ([K, 1] and [1, D] tensors), so rank alone is wrong.
    c.optim.update(decay_mask="all", no_decay=(r"bias$", r"(?i)norm"))
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2500
    c.checkpoint.keep_every = 12_500
    backbone_name = backbone_name or "vit_s16"
  elif preset == "test":
    backbone_name = config_lib.tiny_test_preset(c, backbone_name)
    c.head.update(out_dim=64, hidden_dim=32, bottleneck_dim=16)
    c.crops.update(
      global_size=8,
      local_size=4,
      num_local=2,
      global_scale=(0.5, 1.0),
      local_scale=(0.2, 0.5),
      jitter=(0.4, 0.4, 0.4, 0.1),
    )
    # digits: 88 steps per epoch at batch 16, so these put both phases inside the 6 steps:
    # temperature warmup over 5 steps, last layer frozen for 3.
    c[section].teacher_temp_warmup_epochs = 0.05
    c.optim.frozen_until = ((LAST_LAYER, 0.03),)
  else:
    raise ValueError(
      f"Unknown {c.method} preset {preset!r}; choose fashion_mnist, imagenet or test."
    )
  c.crops.global_size = c.data.image_size
  c.model = config_lib.backbone(backbone_name, image_size=c.data.image_size)
  if preset == "imagenet":
    # DINO's ViT: [cls] pooling, learned position embeddings resized bicubically for the
    # local crops, exact GELU; stochastic depth 0 -> 0.1 over the blocks (--drop_path_rate
    # 0.1), the student only: the method builds its teacher without it.
    c.model.update(
      pool="cls", posemb="learn", posemb_resize="bicubic", gelu_approximate=False, drop_path=0.1
    )
  from jaxssl.models.vit import decode_variant  # pylint: disable=g-import-not-at-top

  patch = c.model.get("patch_size") or decode_variant(c.model.get("variant") or "mu").get(
    "patch_size", 1
  )
  if c.crops.local_size % patch:
    raise ValueError(
      f"crops.local_size={c.crops.local_size} is not a multiple of the "
      f"backbone {backbone_name!r} patch size {patch}; set "
      "--config.crops.local_size."
    )
  return backbone_name


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "dino"
  dino_sections(c, "dino")
  dino_preset(c, "dino", preset, backbone)
  if preset == "imagenet":
    # README.md "Full command": --norm_last_layer false --epochs 300 (batch 16 x 64).
    c.head.norm_last_layer = False
    c.total_epochs = 300.0
  c.lock()
  return c
