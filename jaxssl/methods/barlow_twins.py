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

`config.barlow_twins.loss_scale` multiplies the loss that is differentiated (1 = the true
gradient). The reference run (facebookresearch/barlowtwins `main.py` l.212-216) all-reduces the
cross-correlation with a non-autograd `torch.distributed.all_reduce` and DDP then averages the
gradients over its 16 GPUs, so every parameter got 1/16 of the true gradient; its weight decay
and bias learning rate were tuned under that scale, which `loss_scale = 1/16` reproduces (under
LARS: decay 16x stronger relative to the gradient, bias steps 16x smaller). The logged
'train/loss' is the unscaled loss.
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
    self.loss_scale = config.barlow_twins.loss_scale

  def train_transform(self, info):
    return byol.two_view_transform(self.config, info)

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    z1, z2, new_aux = self.project_views(params, aux, batch, rng)
    loss, metrics = losses.barlow_twins(z1, z2, lambda_=self.lambda_)
    metrics.update(common.collapse_metrics(z1))
    # Logged as 'train/loss' in place of the scaled value the step differentiates.
    metrics["loss"] = loss
    return self.loss_scale * loss, (metrics, new_aux)
