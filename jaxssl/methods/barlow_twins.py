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

import jax
import ml_collections

from jaxssl import losses
from jaxssl.methods import byol
from jaxssl.methods import common


class Method:
  """Barlow Twins: init / loss_fn / post_update / encode over plain pytrees."""
  batch_keys = ("view1", "view2")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = common.build_encoder_with_head(config)
    self.lambda_ = config.barlow_twins.lambda_

  def train_transform(self, info):
    return byol.two_view_transform(self.config, info)

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, batch["view1"], train=False)
    return params, {"model_state": model_state}

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    rng1, rng2 = jax.random.split(rng)
    # One forward per view, as the official code: BatchNorm statistics are per view.
    (z1, _), state = common.apply_model(self.model, params, aux["model_state"], batch["view1"],
                                        train=True, rngs={"dropout": rng1})
    (z2, _), state = common.apply_model(self.model, params, state, batch["view2"], train=True,
                                        rngs={"dropout": rng2})
    loss, metrics = losses.barlow_twins(z1, z2, lambda_=self.lambda_)
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, {**aux, "model_state": state})

  def post_update(self, state):
    return state

  def encode(self, params, aux, images):
    """Frozen encoder features [B, D] for the eval job (before the projector)."""
    out, _ = common.apply_model(self.model, params, aux["model_state"], images, train=False,
                                method=common.EncoderWithHead.encode)
    return out
