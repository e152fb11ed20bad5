"""MoCo v3 (Chen, Xie & He 2021): query = online encoder + projector + predictor, keys from a
momentum encoder, InfoNCE against the other in-batch keys.

Batch: {'view1', 'view2': [B, H, W, C] float32}, BYOL's asymmetric views (the paper follows
BYOL's augmentation, sec. 4). Architecture (alg. 1 and the official `moco/builder.py`):
base encoder f_q -> projector (3 layers for ViT, BN on hidden layers and a final BN without
affine) -> predictor (2 layers, for ViT also ending in a bias-free Dense and a BN without
affine: `_build_mlp(2, dim, mlp_dim, dim)` with its default `last_bn=True`) gives the queries
q; the momentum encoder f_k, an EMA of encoder + projector whose momentum rises from m = 0.99
to 1 on a cosine (`adjust_moco_momentum`, the same rule as BYOL's), gives the keys k. Loss
(alg. 1):

  L = ctr(q1, k2) + ctr(q2, k1),   ctr = `losses.info_nce` (2T x cross-entropy, T = 0.2),

with the keys stop-gradiented. This is BYOL's network with a contrastive loss, so `Method`
extends `byol.Method` and changes only the config section and the loss.

Config: `config.head` is the projector (final_bn=True), `config.moco_v3` holds base_momentum,
temperature and the predictor (final_bn=True for the ViT recipe). Evaluation uses the base
(online) encoder f_q: the official linear-probing script `main_lincls.py` loads the
`base_encoder` weights.
"""

from __future__ import annotations

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.methods import byol


class Method(byol.Method):
  """MoCo v3: BYOL's online/momentum networks, symmetric InfoNCE with in-batch negatives.

  aux = {'model_state', 'teacher' (momentum encoder + projector), 'teacher_state'}.
  """

  name = "moco_v3"

  def __init__(self, config, kernels: Kernels = REFERENCE):
    super().__init__(config, kernels)
    self.temperature = self.section.temperature

  def pair_loss(self, p1, p2, t1, t2):
    """ctr(q1, k2) + ctr(q2, k1): queries p are predictions, keys t momentum projections."""
    loss12, metrics12 = losses.info_nce(p1, t2, temperature=self.temperature)
    loss21, metrics21 = losses.info_nce(p2, t1, temperature=self.temperature)
    metrics = {k: 0.5 * (metrics12[k] + metrics21[k]) for k in metrics12}
    return loss12 + loss21, metrics
