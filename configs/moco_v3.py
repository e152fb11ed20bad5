r"""MoCo v3 (Chen, Xie & He 2021): queries from an online encoder + predictor, keys from a
momentum encoder, symmetric InfoNCE with in-batch negatives.

  python -m jaxssl.train --config=configs/moco_v3.py:fashion_mnist --workdir=/tmp/moco_v3

Presets (the part after ':'; append ',<backbone>' to swap the backbone, e.g.
`configs/moco_v3.py:fashion_mnist,resnet18`):
  fashion_mnist  Fashion-MNIST 60k (Debian dataset-fashion-mnist), the CPU benchmark: projector
                 512 -> 128 (3 layers, final BN), predictor 512 -> 128 (final BN).
  imagenet       The paper's ViT-S recipe for pods (sec. 4 and the official CONFIG.md): ViT-S/16
                 with 12 heads and exact GELU (`vits.py` `vit_small`, timm `nn.GELU`),
                 projector 3 x 4096 -> 256 with final BN, predictor 4096 -> 256 with final BN,
                 T = 0.2, m = 0.99 -> 1 on a cosine, AdamW lr 1.5e-4 x B/256 at batch 4096,
                 wd 0.1, 40 warmup epochs, 300 epochs; data is a prepared TFDS `imagenet2012`; the
                 random patch projection stays frozen (`--stop-grad-conv1`, sec. 5.3, through
                 `optim.frozen`) and the encoder outputs its [cls] token (`pool='cls'`).
  test           Tiny and fast: used by the test suite.
Backbones: see `jaxssl.config_lib.BACKBONES`. (The paper's ResNet recipe uses a 2-layer
projector, a predictor without the final BN (still no output bias) and T = 1.0: set
config.head.num_layers, config.moco_v3.predictor.final_bn=False with final_bias=False, and
config.moco_v3.temperature.)
"""

from jaxssl import config_lib


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("fashion_mnist", "imagenet", "test")


def get_config(arg: str = "fashion_mnist"):
  preset, _, backbone = arg.partition(",")
  c = config_lib.base_config()
  c.method = "moco_v3"
  # ViT defaults of the official code: m 0.99 (cosine to 1), T 0.2, predictor 2 layers ending,
  # like the projector, in a Dense without bias and a BN without affine (moco/builder.py
  # `_build_mlp(2, dim, mlp_dim, dim)` with its default last_bn=True).
  c.moco_v3 = dict(
    base_momentum=0.99,
    temperature=0.2,
    predictor=dict(hidden_dim=4096, num_layers=2, final_bn=True),
  )
  # The projector: 3 layers for ViT, BN on hidden layers and a final BN without affine.
  c.head = dict(hidden_dim=4096, out_dim=256, num_layers=3, use_bn=True, final_bn=True)
  c.augment = config_lib.byol_augment(crop_scale=(0.2, 1.0), flip_prob=0.0)
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.weight_decay = 1e-4

  if preset == "fashion_mnist":
    backbone = config_lib.fashion_mnist_preset(c, backbone)
    c.head = dict(hidden_dim=512, out_dim=128, num_layers=3, use_bn=True, final_bn=True)
    c.moco_v3.predictor.hidden_dim = 512
  elif preset == "imagenet":
    c.data.name = "imagenet2012"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.augment = config_lib.byol_augment(crop_scale=(0.08, 1.0), flip_prob=0.5)
    c.batch_size = 4096
    c.total_epochs = 300.0
    c.optim.name = "adamw"
    c.optim.base_lr = 1.5e-4
    c.optim.lr_scaling = "linear"
    c.optim.weight_decay = 0.1
    c.optim.decay_mask = "all"  # main_moco.py: AdamW(model.parameters(), weight_decay=0.1)
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    # 40 epochs of 312 iterations (main_moco.py: drop_last=True, 1,281,167 // 4096).
    c.optim.warmup_steps = 12_480
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep_every = 10000
    backbone = backbone or "vit_s16"
    # Sec. 5.3: a frozen random patch projection stabilises ViT training (no gradient ever).
    c.optim.frozen = (r"^encoder/embedding/",)
  elif preset == "test":
    backbone = config_lib.tiny_test_preset(c, backbone)
    c.augment = config_lib.byol_augment(crop_scale=(0.5, 1.0), flip_prob=0.0)
    c.head = dict(hidden_dim=32, out_dim=16, num_layers=3, use_bn=True, final_bn=True)
    c.moco_v3.predictor.hidden_dim = 32
  else:
    raise ValueError(f"Unknown moco_v3 preset {preset!r}; choose fashion_mnist, imagenet or test.")
  c.model = config_lib.backbone(backbone, image_size=c.data.image_size)
  if preset == "imagenet" and c.model.name == "vit":
    c.model.pool = "cls"  # the official ViT-MoCo reads the [cls] token
    c.model.gelu_approximate = False  # timm's nn.GELU (erf)
    if c.model.get("variant") == "S/16":
      c.model.num_heads = 12  # vits.py vit_small: 12 heads of 32 (big_vision's S has 6)
  c.lock()
  return c
