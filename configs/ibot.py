r"""iBOT (Zhou et al. 2022) and DINOv2's losses (Oquab et al. 2023): DINO + masked-patch
self-distillation, optionally Sinkhorn-Knopp targets and KoLeo.

  python -m jaxssl.train --config=configs/ibot.py:fashion_mnist --workdir=/tmp/ibot

Presets (the part after ':'; append ',<backbone>' to swap the ViT):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: DINO's fashion_mnist crops, head
                 and teacher temperature, block masks on the 4x4 patch grid of the global
                 crops.
  imagenet       iBOT's ViT-S/16 recipe (sec. 4.1 and appendix A): shared head with 8192
                 prototypes, norm_last_layer off, 2 global crops of scale (0.14, 1) + 10 local
                 96px of (0.05, 0.4), masks with probability 0.5 and ratio U[0.1, 0.5], teacher
                 temperature 0.04 -> 0.07 over 30 epochs for [cls] and patches, momentum 0.996,
                 AdamW lr 5e-4 x B/256 at batch 1024, wd 0.04, 800 epochs.
  dinov2         DINOv2's losses on a ViT-S/14 (Oquab et al. 2023, sec. 4 and its
                 ssl_default_config): Sinkhorn-Knopp teacher targets, KoLeo 0.1 on the student
                 [cls] features, separate iBOT head, 65536 prototypes, global scale (0.32, 1),
                 8 local 98px crops of (0.05, 0.32), momentum 0.992 -> 1, lr 0.004 at batch
                 1024 (sqrt scaling). Not reproduced: LayerScale, stochastic depth, the
                 weight-decay schedule, xFormers memory-efficient attention.
  test, test_dinov2  Tiny and fast: used by the test suite (the second with Sinkhorn-Knopp,
                 KoLeo and a separate patch head).
"""

import os

from jaxssl import config_lib

# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "dinov2", "test", "test_dinov2")


def get_config(arg: str = "fashion_mnist"):
  # configs/dino.py, whose DINO sections and presets iBOT extends.
  dino = config_lib.load_config_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "dino.py"), "_jaxssl_dino_config"
  )
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "ibot"
  dino.dino_sections(c, "ibot")
  c.ibot.update(
    dict(
      mask_ratio=(0.1, 0.5),
      mask_prob=0.5,
      mask_min_block=4,
      patch_loss_weight=1.0,
      shared_head=True,
      patch_out_dim=8192,
      centering="center",
      koleo_weight=0.0,
    )
  )
  dinov2 = preset in ("dinov2", "test_dinov2")
  base = {"dinov2": "imagenet", "test_dinov2": "test"}.get(preset, preset)
  dino.dino_preset(c, "ibot", base, backbone)
  if preset == "imagenet":
    c.head.update(out_dim=8192, norm_last_layer=False)
    c.crops.update(global_scale=(0.14, 1.0), num_local=10)
    c.total_epochs = 800.0
    c.checkpoint.keep_every = 50_000
  if dinov2:
    c.ibot.update(centering="sinkhorn_knopp", koleo_weight=0.1, shared_head=False)
    c.ibot.patch_out_dim = c.head.out_dim
  if preset == "dinov2":
    c.model.patch_size = 14  # ViT-S/14
    c.crops.update(global_scale=(0.32, 1.0), local_scale=(0.05, 0.32), local_size=98)
    c.ibot.base_momentum = 0.992
    c.optim.lr_scaling = "sqrt"
    c.optim.base_lr = 0.002  # x sqrt(B/256) = DINOv2's 0.004 x sqrt(B/1024)
  c.lock()
  return c
