"""SimCLR (Chen et al. 2020): two augmented views, encoder + projection MLP, NT-Xent.

Batch: {'view1': [B, H, W, C], 'view2': [B, H, W, C]} float32, made by `train_transform`.
Config section `config.simclr`: temperature, directions ('sum': the loss is the sum of the two
views' mean cross-entropies, `reduce_mean(loss_a + loss_b)` of the official TF2
`objective.add_contrastive_loss`, i.e. 2 x `losses.nt_xent`; 'mean': `nt_xent` itself, the
form of runs recorded before the key existed). The factor is not neutral under LARS: the
trust ratio normalises the weights' step but not the ratio of gradient to weight decay, and
biases / BN parameters (no trust ratio) step by lr x gradient. Evaluation uses the encoder's
pre-projection features, as the paper does (section 4.2).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.data import augment
from jaxssl.methods import common


class Method(common.EncoderHeadMethod):
  """SimCLR: encoder + projection MLP, both views in one BatchNorm batch."""

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    super().__init__(config, kernels)
    self.temperature = config.simclr.temperature
    self.loss_factor = common.direction_factor(config, "simclr")

  def train_transform(self, info):
    """Per-example transform making the two views (seeded by Grain per element)."""
    aug = augment.SimCLRAugment(
      mean=info.mean,
      std=info.std,
      output_size=self.config.data.image_size,
      **self.config.augment.to_dict(),
    )
    return augment.TwoViews(aug, aug)

  def loss_fn(self, params, aux, batch, rng, step):
    del rng, step  # SimCLR's randomness is all in the data augmentation.
    n = batch["view1"].shape[0]
    images = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)
    # One forward over both views: BatchNorm statistics span 2N images, as in the paper's
    # global BN.
    (z, _), model_state = common.apply_model(
      self.model, params, aux["model_state"], images, train=True
    )
    loss, metrics = losses.nt_xent(z[:n], z[n:], temperature=self.temperature)
    loss = self.loss_factor * loss
    metrics.update(common.collapse_metrics(z[:n]))
    return loss, (metrics, {**aux, "model_state": model_state})
