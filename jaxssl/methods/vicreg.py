"""VICReg (Bardes, Ponce & LeCun 2022): variance-invariance-covariance regularisation.

Batch: {'view1', 'view2': [B, H, W, C] float32}, BYOL's asymmetric views, which the paper
follows (blur p = 1.0 / 0.1, solarisation p = 0.0 / 0.2; `byol.two_view_transform`).
Network: encoder f -> expander h, an MLP of 3 layers (8192-8192-8192 in the paper) with BN +
ReLU after the hidden layers and a plain linear output (`config.head`). Both views go through
the same weights (no teacher, no stop-gradient). Loss: `losses.vicreg(z1, z2)` of eq. 6 with
lambda = mu = 25, nu = 1 (`config.vicreg`). Evaluation uses the encoder's representation y, not
the expander output (sec. 4.1).
"""
from __future__ import annotations

import jax
import ml_collections

from jaxssl import losses
from jaxssl.methods import byol
from jaxssl.methods import common


class Method:
  """VICReg: init / loss_fn / post_update / encode over plain pytrees."""
  batch_keys = ("view1", "view2")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = common.build_encoder_with_head(config)
    self.coeffs = dict(sim_coeff=config.vicreg.sim_coeff, std_coeff=config.vicreg.std_coeff,
                       cov_coeff=config.vicreg.cov_coeff)

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
    loss, metrics = losses.vicreg(z1, z2, **self.coeffs)
    # The loss's per-dimension std of the raw expander outputs is logged as 'expander_std';
    # 'embedding_std' is the shared collapse monitor (std of L2-normalised embeddings).
    metrics["expander_std"] = metrics.pop("embedding_std")
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, {**aux, "model_state": state})

  def post_update(self, state):
    return state

  def encode(self, params, aux, images):
    """Frozen encoder features [B, D] for the eval job (before the expander)."""
    out, _ = common.apply_model(self.model, params, aux["model_state"], images, train=False,
                                method=common.EncoderWithHead.encode)
    return out
