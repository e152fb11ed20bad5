r"""SigLIP (Zhai et al. 2023): image tower + text tower, pairwise sigmoid loss.

  python -m jaxssl.train --config=configs/siglip.py:tuxpaint --workdir=/tmp/siglip
  python -m jaxssl.evaluate --workdir=/tmp/siglip

Same presets, towers and data as configs/clip.py (this file reuses its builder); SigLIP's own
pieces: t' = log 10 and b = -10 at init (sec. 3.2), and in the `paper` preset the paper's
recipe (sec. 4: ViT-B/16, 16 text tokens, batch 32k, lr 1e-3, wd 1e-4, AdamW b2 0.95).
"""

import importlib.util
import os

PRESETS = ("tuxpaint", "emoji", "paper", "test")


def _clip_config_module():
  # Configs are loaded by file path (not as a package), so load the sibling by path too.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip.py")
  spec = importlib.util.spec_from_file_location("_jaxssl_clip_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = "tuxpaint"):
  return _clip_config_module().image_text_config("siglip", arg)
