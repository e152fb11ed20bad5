"""Pure SSL losses: functions of the global batch returning (loss, metrics).

Each loss takes arrays as seen by the whole (unsharded) batch and keyword-only
hyperparameters, computes in at least float32, and returns a scalar loss and a
dict of scalar metrics (without the 'train/' prefix; the trainer adds it).
`dino` and `ibot_patch_loss` also return the [K] vector 'batch_center', which
the method consumes with `dino_center_update` and should not log as a scalar.
"""

from jaxssl.losses.contrastive import clip
from jaxssl.losses.contrastive import info_nce
from jaxssl.losses.contrastive import nt_xent
from jaxssl.losses.contrastive import siglip
from jaxssl.losses.distillation import byol
from jaxssl.losses.distillation import dino
from jaxssl.losses.distillation import dino_center_update
from jaxssl.losses.distillation import dino_cross_entropy
from jaxssl.losses.distillation import ibot_patch_cross_entropy
from jaxssl.losses.distillation import ibot_patch_loss
from jaxssl.losses.distillation import koleo
from jaxssl.losses.distillation import simsiam
from jaxssl.losses.distillation import sinkhorn_knopp
from jaxssl.losses.monitoring import embedding_std
from jaxssl.losses.monitoring import rankme
from jaxssl.losses.predictive import causal_lm
from jaxssl.losses.predictive import data2vec
from jaxssl.losses.predictive import ijepa
from jaxssl.losses.predictive import masked_lm
from jaxssl.losses.reconstruction import mae
from jaxssl.losses.reconstruction import patchify
from jaxssl.losses.reconstruction import unpatchify
from jaxssl.losses.redundancy import barlow_twins
from jaxssl.losses.redundancy import vicreg
