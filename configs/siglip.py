r"""SigLIP (Zhai et al. 2023): image tower + text tower, pairwise sigmoid loss.

  python -m jaxssl.train --config=configs/siglip.py:tuxpaint --workdir=/tmp/siglip
  python -m jaxssl.evaluate --workdir=/tmp/siglip

Same presets, towers and data as configs/clip.py (this file reuses its builder); SigLIP's own
pieces: t' = log 10 and b = -10 at init (sec. 3.2), and in the `paper` preset the paper's
recipe (sec. 4: ViT-B/16, 16 text tokens, batch 32k, lr 1e-3, wd 1e-4, AdamW b2 0.95), with
big_vision's global-norm gradient clip 1.0. The paper's wd 1e-4 is big_vision's decoupled decay
(not multiplied by the learning rate): `optim.weight_decay` = 1e-4 / 1e-3 = 0.1 in optax's
lr-multiplied convention.
"""

import os

from jaxssl import config_lib

PRESETS = ("tuxpaint", "emoji", "paper", "test")


def get_config(arg: str = "tuxpaint"):
  clip = config_lib.load_config_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip.py"), "_jaxssl_clip_config"
  )
  return clip.image_text_config("siglip", arg)
