"""SigLIP (Zhai et al. 2023): pairwise sigmoid loss over all image-text pairs of the batch.

Image tower + text tower + linear projections (jaxssl/methods/image_text.py). Every pair is a
binary classification with logits t * cos(img_i, txt_j) + b, t = exp(t') (eq. 1, alg. 1); the
paper initialises t' = log 10 and b = -10 (sec. 3.2), so that training starts near the prior
of mostly negative pairs instead of spending its first steps correcting it. Config section
`config.siglip`: init_t_prime, init_bias. Evaluation as CLIP's.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxssl import losses
from jaxssl.methods import image_text


class Method(image_text.ImageTextMethod):
  """SigLIP: learned temperature t = exp(t') and bias b, sigmoid loss on every pair."""

  def initial_scalars(self, config):
    return (("t_prime", config.siglip.init_t_prime), ("bias", config.siglip.init_bias))

  def contrastive_loss(self, img, txt, scalars):
    return losses.siglip(img, txt, jnp.exp(scalars["t_prime"]), scalars["bias"])
