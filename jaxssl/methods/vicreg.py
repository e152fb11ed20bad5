"""VICReg (Bardes, Ponce & LeCun 2022): variance-invariance-covariance regularisation.

Batch: {'view1', 'view2': [B, H, W, C] float32}, BYOL's asymmetric views, which the paper
follows (blur p = 1.0 / 0.1, solarisation p = 0.0 / 0.2; `byol.two_view_transform`).
Network: encoder f -> expander h, an MLP of 3 layers (8192-8192-8192 in the paper) with BN +
ReLU after the hidden layers and a plain linear output (`config.head`). Both views go through
the same weights (no teacher, no stop-gradient). Loss: `losses.vicreg(z1, z2)` of eq. 6 with
lambda = mu = 25, nu = 1 (`config.vicreg`), the two variance terms averaged as in the official
code (`vicreg.variance_terms='mean'`; 'sum' is eq. 6 as printed, mu on each term, what runs
recorded before the key computed). Evaluation uses the encoder's representation y, not
the expander output (sec. 4.1).
"""

from __future__ import annotations

import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.methods import byol
from jaxssl.methods import common


class Method(common.EncoderHeadMethod):
  """VICReg: encoder + expander, both views through the same weights."""

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    super().__init__(config, kernels)
    terms = config.vicreg.get("variance_terms", "mean")
    if terms not in ("mean", "sum"):
      raise ValueError(f"config.vicreg.variance_terms={terms!r}; choose 'mean' or 'sum'.")
    # losses.vicreg averages the two views' variance terms; their sum is mu x 2 on that mean.
    self.coeffs = dict(
      sim_coeff=config.vicreg.sim_coeff,
      std_coeff=config.vicreg.std_coeff * (2.0 if terms == "sum" else 1.0),
      cov_coeff=config.vicreg.cov_coeff,
    )

  def train_transform(self, info):
    return byol.two_view_transform(self.config, info)

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    z1, z2, new_aux = self.project_views(params, aux, batch, rng)
    loss, metrics = losses.vicreg(z1, z2, **self.coeffs)
    # The loss's per-dimension std of the raw expander outputs is logged as 'expander_std';
    # 'embedding_std' is the shared collapse monitor (std of L2-normalised embeddings).
    metrics["expander_std"] = metrics.pop("embedding_std")
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, new_aux)
