"""BERT masked language modelling (Devlin et al. 2019, sec. 3.1).

Batch (made by `train_transform`, text_masking.BertMasking): {'tokens': corrupted int32
[B, T], 'labels': original ids, 'mask': 1 at the 15 % positions to predict (80 % [MASK], 10 %
random token, 10 % unchanged)}. A bidirectional pre-LN Transformer with a tied LM head predicts
the original token at the chosen positions (`losses.masked_lm`); no next-sentence task (RoBERTa,
Liu et al. 2019, found it unnecessary; packed windows cross documents). `encode` returns the
mean of the final features over positions.
"""

from __future__ import annotations

import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.data import text_masking
from jaxssl.methods import common
from jaxssl.methods import language


class Method(language.LanguageModelMethod):
  batch_keys = ("tokens", "labels", "mask")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.model = language.build_transformer(config, causal=False, pool="mean", kernels=kernels)

  def train_transform(self, info):
    language.check_info(self.config, info)
    m = self.config.mlm
    return text_masking.BertMasking(
      mask_id=info.mask_id,
      vocab_size=info.vocab_size,
      special_ids=(info.pad_id, info.eos_id, info.mask_id),
      mask_prob=m.mask_prob,
      replace_mask=m.replace_mask,
      replace_random=m.replace_random,
    )

  def loss_fn(self, params, aux, batch, rng, step):
    del step
    pooled, out = self.apply(params, aux, batch["tokens"], train=True, rng=rng)
    loss, metrics = losses.masked_lm(out["logits"], batch["labels"], batch["mask"])
    metrics.update(common.collapse_metrics(pooled))
    return loss, (metrics, aux)
