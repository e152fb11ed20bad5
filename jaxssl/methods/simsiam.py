"""SimSiam (Chen & He 2021): a Siamese network without negatives, momentum encoder or EMA.

Batch: {'view1', 'view2': [B, H, W, C] float32}, two augmentations of each image (BYOL's
`two_view_transform` with one blur / solarize probability for both views, i.e. the MoCo v2
augmentation SimSiam uses). Network (sec. 3): encoder f (backbone + 3-layer projection MLP with
BN on every layer, the last without affine) and prediction MLP h (bottleneck
Linear-BN-ReLU-Linear) -- BYOL's `OnlineNetwork`, with the projector from `config.head` and the
predictor from `config.simsiam.predictor`. Loss: `losses.simsiam`, the symmetric negative cosine
D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 of eq. 1-2. Both branches share the weights;
the stop-gradient is the only thing preventing collapse (sec. 4.1), so there is no teacher and
no post-update. Evaluation uses the encoder's features (before the projector), as the paper's
linear probe.
"""

from __future__ import annotations

import jax
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.methods import byol
from jaxssl.methods import common


class Method:
  """SimSiam: init / loss_fn / post_update / encode over plain pytrees.

  aux = {'model_state': BatchNorm statistics of the projector, predictor (and a ResNet)}.
  """

  batch_keys = ("view1", "view2")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.model = byol.build_online_network(config, config.simsiam.predictor, kernels)

  def train_transform(self, info):
    return byol.two_view_transform(self.config, info)

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, batch["view1"], train=False)
    return params, {"model_state": model_state}

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    rng1, rng2 = jax.random.split(rng)
    # One forward per view (as the official code: BatchNorm statistics per view).
    (z1, p1), state = common.apply_model(
      self.model, params, aux["model_state"], batch["view1"], train=True, rngs={"dropout": rng1}
    )
    (z2, p2), state = common.apply_model(
      self.model, params, state, batch["view2"], train=True, rngs={"dropout": rng2}
    )
    loss, metrics = losses.simsiam(p1, p2, z1, z2)  # stopgrad(z) inside the loss
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, {**aux, "model_state": state})

  def post_update(self, state):
    return state

  def encode(self, params, aux, images):
    """Frozen encoder features [B, D] for the eval job (before the projector)."""
    out, _ = common.apply_model(
      self.model, params, aux["model_state"], images, train=False, method=byol.OnlineNetwork.encode
    )
    return out
