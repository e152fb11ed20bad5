"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of two views' embeddings the
identity.

Batch: {'view1', 'view2': [B, H, W, C] float32}, BYOL's asymmetric views (the paper's
implementation details: blur p = 1.0 / 0.1, solarisation p = 0.0 / 0.2;
`byol.two_view_transform`). Network: encoder -> projector of 3 linear layers (8192 units each
in the paper), BN + ReLU after the first two (`config.head`); both views share the weights.
Loss: `losses.barlow_twins(z1, z2, lambda_)` of eq. 1. The paper's final BatchNorm without
affine parameters before the cross-correlation is inside the loss (it standardises each
dimension over the batch with the biased variance and eps 1e-5, as `nn.BatchNorm1d(affine=False)`
in training mode), so the projector ends with a plain linear layer; its bias cancels in that
standardisation. Evaluation uses the encoder's representation, before the projector.
"""

from __future__ import annotations

import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.methods import byol
from jaxssl.methods import common


class Method(common.EncoderHeadMethod):
  """Barlow Twins: encoder + projector, both views through the same weights."""

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    super().__init__(config, kernels)
    self.lambda_ = config.barlow_twins.lambda_

  def train_transform(self, info):
    return byol.two_view_transform(self.config, info)

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    z1, z2, new_aux = self.project_views(params, aux, batch, rng)
    loss, metrics = losses.barlow_twins(z1, z2, lambda_=self.lambda_)
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, new_aux)
