"""GPT (Radford et al. 2018; GPT-2, 2019): next-token prediction with a causal transformer.

Batch: {'tokens': int32 [B, seq_len]} packed windows of the text corpus (jaxssl/data/text.py).
The logits at position t predict token t + 1 (`losses.causal_lm`); the model is a pre-LN
causal Transformer with a final LayerNorm and tied input/output embeddings (GPT-2 sec. 2.3).
`encode` returns the last position's features (the one that has read the whole window).
"""

from __future__ import annotations

import math

import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl.data import text_masking
from jaxssl.methods import language


class Method(language.LanguageModelMethod):
  batch_keys = ("tokens",)

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.model = language.build_transformer(config, causal=True, pool="last", kernels=kernels)

  def train_transform(self, info):
    language.check_info(self.config, info)
    return text_masking.Tokens()

  def loss_fn(self, params, aux, batch, rng, step):
    del step
    _, out = self.apply(params, aux, batch["tokens"], train=True, rng=rng)
    loss, metrics = losses.causal_lm(out["logits"], batch["tokens"])
    metrics["bits_per_token"] = loss / math.log(2.0)
    return loss, (metrics, aux)
