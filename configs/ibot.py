r"""iBOT (Zhou et al. 2022) and DINOv2's losses (Oquab et al. 2023): DINO + masked-patch
self-distillation, optionally Sinkhorn-Knopp targets and KoLeo.

  python -m jaxssl.train --config=configs/ibot.py:fashion_mnist --workdir=/tmp/ibot

Presets (the part after ':'; append ',<backbone>' to swap the ViT):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: DINO's fashion_mnist crops, head
                 and teacher temperature, block masks on the 4x4 patch grid of the global
                 crops.
  imagenet       iBOT's README ViT-S/16 command (77.9% linear): shared head with 8192
                 prototypes, norm_last_layer off, 2 global crops of scale (0.25, 1) + 10 local
                 96px of (0.05, 0.25), masks with probability 0.5, ratio U[0.1, 0.5] and blocks
                 of >= 16 patches, teacher temperature 0.04 -> 0.07 over 30 epochs for [cls]
                 and patches, momentum 0.996, last layer frozen for epoch 1, drop path 0.1 on
                 the student; AdamW lr 5e-4 x B/256 at batch 1024, cosine to 1e-6, weight decay
                 cosine 0.04 -> 0.4, per-tensor gradient clip 3.0, 800 epochs.
  dinov2         DINOv2's losses on a ViT-S/14 (Oquab et al. 2023, sec. 4 and its
                 ssl_default_config): Sinkhorn-Knopp teacher targets (patches: the masked
                 ones), KoLeo 0.1 on the student [cls] features of each group of 64 images (a
                 GPU's batch), separate iBOT head, 65536 prototypes with a trained scale,
                 global scale (0.32, 1), 8 local 98px crops of (0.05, 0.32), momentum 0.992 ->
                 1, lr 0.004 at batch 1024 (sqrt scaling) to 1e-6, layer-wise LR decay 0.9,
                 patch embedding LR x 0.2, weight decay cosine 0.04 -> 0.4, gradient clip 3.0
                 per module (backbone, each head). No ViT-S recipe exists (the released ViT-S
                 is distilled): drop path is DINO's 0.1 for ViT-S. Not reproduced: LayerScale,
                 the last layer's zero-LR epoch with Adam's state running (frozen as DINO's),
                 xFormers memory-efficient attention.
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
      koleo_group_size=0,  # images per KoLeo neighbour search; 0 = the whole batch
    )
  )
  dinov2 = preset in ("dinov2", "test_dinov2")
  base = {"dinov2": "imagenet", "test_dinov2": "test"}.get(preset, preset)
  dino.dino_preset(c, "ibot", base, backbone)
  if preset == "imagenet":
    c.head.update(out_dim=8192, norm_last_layer=False)
    # README: --global_crops_scale 0.25 1 --local_crops_scale 0.05 0.25 (0.14 is main_ibot.py's
    # default for runs without local crops).
    c.crops.update(global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), num_local=10)
    c.ibot.mask_min_block = 16  # loader.py: (min(H, W) // 3) ** 2 on the 14 x 14 grid
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
    c.optim.end_lr_factor = 1e-6 / (c.optim.base_lr * (c.batch_size / 256) ** 0.5)  # min_lr
    # ssl_default_config.yaml optim: layerwise_decay 0.9, patch_embed_lr_mult 0.2; clip_grad 3.0
    # per student module (train.py: backbone, dino_head, ibot_head = our top-level trees).
    c.optim.update(
      layer_decay=0.9,
      lr_multipliers=((r"^encoder/embedding/", 0.2),),
      grad_clip_mode="per_module",
      grad_clip_depth=1,
    )
    c.head.norm_last_layer = False  # DINOv2's DINOHead always trains weight_g
    c.ibot.koleo_group_size = 64  # batch_size_per_gpu: koleo_loss.py has no all-gather
  if preset == "test_dinov2":
    c.ibot.koleo_group_size = 8  # two groups of the test batch of 16
  c.lock()
  return c
