"""Shared pieces of the language-model methods (methods/gpt.py, methods/mlm.py).

The text transformer is built from `config.model` (jaxssl/models/transformer.py fields); the
vocabulary size is a config value because the eval job rebuilds the method from config alone,
and `check_info` verifies it against the prepared dataset's tokenizer.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl.methods import common
from jaxssl.models.transformer import Transformer


def build_transformer(
  config: ml_collections.ConfigDict, *, causal: bool, pool: str, kernels: Kernels = REFERENCE
) -> Transformer:
  fields = dict(config.model)
  name = fields.pop("name", "transformer")
  if name != "transformer":
    raise ValueError(f"Language-model methods need model.name='transformer', got {name!r}.")
  if "dtype" in fields:
    fields["dtype"] = jnp.dtype(fields["dtype"])
  return Transformer(**fields, causal=causal, pool=pool, kernels=kernels)


def check_info(config: ml_collections.ConfigDict, info) -> None:
  if not hasattr(info, "vocab_size"):
    raise ValueError(
      f"{config.method} trains on text; data.name must be a text dataset "
      "'<corpus>:<tokenizer>:<seq_len>' (jaxssl/data/text.py), got "
      f"{config.data.name!r}."
    )
  if info.vocab_size != config.model.vocab_size:
    raise ValueError(
      f"model.vocab_size={config.model.vocab_size} but the tokenizer of "
      f"{info.name!r} has {info.vocab_size} ids; set --config.model.vocab_size="
      f"{info.vocab_size}."
    )
  if info.seq_len > config.model.max_len:
    raise ValueError(f"data seq_len {info.seq_len} > model.max_len {config.model.max_len}.")


class LanguageModelMethod:
  """init / post_update / encode for a Transformer whose input is batch['tokens']."""

  model: Transformer

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, batch["tokens"], train=False)
    return params, {"model_state": model_state}

  def apply(self, params, aux, tokens, *, train=False, rng=None):
    (pooled, out), _ = common.apply_model(
      self.model,
      params,
      aux["model_state"],
      tokens,
      train=train,
      rngs={"dropout": rng} if rng is not None else None,
    )
    return pooled, out

  def post_update(self, state):
    return state

  def encode(self, params, aux, tokens):
    """Pooled text features [B, width] for the eval job."""
    return self.apply(params, aux, tokens)[0]

  def logits(self, params, aux, tokens):
    return self.apply(params, aux, tokens)[1]["logits"]
