r"""DINO (Caron et al. 2021): self-distillation of a multi-crop student into an EMA teacher.

  python -m jaxssl.train --config=configs/dino.py:fashion_mnist --workdir=/tmp/dino

Presets (the part after ':'; append ',<backbone>' to swap the ViT, e.g.
`configs/dino.py:test,vit_mu4`; crops.local_size must be a multiple of its patch size):
  fashion_mnist  Fashion-MNIST 60k, the CPU benchmark: vit_mnist (7x7 patches), 2 global 28px
                 + 4 local 14px crops, head 512 -> 128 -> 1024 prototypes; teacher
                 temperature 0.04 with no warmup, DINO's code default (the paper's warmup to
                 0.07 collapsed this preset to uniform targets: README "Method zoo").
  imagenet       The paper's ViT-S/16 recipe for pods (main_dino.py defaults, sec. 3.1 and
                 appendix): [cls]-pooled ViT-S/16 with learned (bicubic-resized) position
                 embeddings and exact GELU; 2 global 224px crops of scale (0.4, 1) + 8 local 96px
                 of (0.05, 0.4); head 2048 -> 256 -> 65536, norm_last_layer; teacher momentum
                 0.996 -> 1 (cosine), teacher temperature 0.04 -> 0.07 over 30 epochs, center
                 momentum 0.9, last layer frozen for epoch 1; AdamW lr 5e-4 x B/256 at batch
                 1024, 10 warmup epochs, wd 0.04, grad clip 3.0, 100 epochs. Not reproduced:
                 the weight-decay cosine 0.04 -> 0.4 and drop-path 0.1 (jaxssl has neither).
  test           Tiny and fast: used by the test suite.
"""
from jaxssl import config_lib

# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ('fashion_mnist', 'imagenet', 'test')


def get_config(arg: str = 'fashion_mnist'):
  preset, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method = 'dino'
  config_lib.dino_sections(c, 'dino')
  config_lib.dino_preset(c, 'dino', preset, backbone)
  c.lock()
  return c
