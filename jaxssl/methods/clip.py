"""CLIP (Radford et al. 2021): symmetric softmax contrastive loss over image-text pairs.

Image tower + text tower + linear projections (jaxssl/methods/image_text.py). The logits are
cosine similarities times a learned scale exp(log_scale), initialised to 1 / 0.07 and clipped
at 100 "to prevent scaling the logits by more than 100" (sec. 2.5); `losses.clip` is fig. 3's
pseudocode. Config section `config.clip`: init_temperature (0.07), max_scale (100).
Evaluation: zero-shot classification and retrieval through the text tower
(jaxssl/eval/zeroshot.py), and linear / kNN / few-shot on the image tower's features.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxssl import losses
from jaxssl.methods import image_text


class Method(image_text.ImageTextMethod):
  """CLIP: one learned temperature, softmax cross-entropy in both directions."""

  def initial_scalars(self, config):
    return (("log_scale", math.log(1.0 / config.clip.init_temperature)),)

  def contrastive_loss(self, img, txt, scalars):
    # The clip of the scale is the paper's; the official code clamps the parameter after each
    # step, here the forward takes min(exp(log_scale), max): the same logits.
    scale = jnp.minimum(jnp.exp(scalars["log_scale"]), self.config.clip.max_scale)
    return losses.clip(img, txt, scale)
