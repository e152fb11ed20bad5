"""Flax Linen backbones and heads; `build_encoder` makes an encoder from a model config."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.kernels import REFERENCE, Kernels

from jaxssl.models.dino_head import DINOHead
from jaxssl.models.heads import PredictionHead, ProjectionHead
from jaxssl.models.mae_decoder import MAEDecoder
from jaxssl.models.resnet import ResNet
from jaxssl.models.vit import ViT, decode_variant

ENCODERS = {"vit": ViT, "resnet": ResNet}

__all__ = [
  "DINOHead",
  "ENCODERS",
  "MAEDecoder",
  "PredictionHead",
  "ProjectionHead",
  "ResNet",
  "ViT",
  "build_encoder",
  "compute_dtype",
  "decode_variant",
]


def compute_dtype(model_config: Mapping[str, Any]):
  """The compute dtype `model.dtype` names ('float32' or 'bfloat16'; default float32).

  Heads and decoders built next to the encoder take it too, so one config switch makes the
  whole forward mixed precision while every parameter stays float32 (the master weights).
  """
  name = model_config.get("dtype", "float32")
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(
      f"model.dtype={name!r} is not a compute dtype; use 'float32' or "
      "'bfloat16' (parameters stay float32 either way)."
    )
  return dtype


def _module_fields(cls) -> list[str]:
  # 'parent' and 'name' are Linen bookkeeping and 'kernels' the backend's ops, not architecture.
  return [
    f.name
    for f in dataclasses.fields(cls)
    if f.init and f.name not in ("parent", "name", "kernels")
  ]


def build_encoder(model_config: Mapping[str, Any], kernels: Kernels = REFERENCE) -> nn.Module:
  """Builds ViT or ResNet from {'name': 'vit'|'resnet', **module fields}, with `kernels`' ops.

  E.g. {'name': 'vit', 'variant': 'mu/4', 'pool': 'gap'} or
  {'name': 'resnet', 'depth': 18, 'stem': 'cifar', 'width': 16}. Accepts a dict or an
  ml_collections ConfigDict; unknown names or fields raise ValueError (a typo in a config must
  not silently fall back to a default). `kernels` is `jaxssl.kernels.for_mesh(mesh)` of the
  mesh the model runs on (the reference ops by default).
  """
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  name = config.pop("name", None)
  if name not in ENCODERS:
    raise ValueError(f"Unknown encoder name {name!r}; set model.name to one of {sorted(ENCODERS)}.")
  cls = ENCODERS[name]
  valid = _module_fields(cls)
  unknown = sorted(set(config) - set(valid))
  if unknown:
    raise ValueError(f"Unknown field(s) {unknown} for encoder {name!r}; valid fields: {valid}.")
  # Configs round-trip through JSON as lists; module fields that are shapes want tuples.
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
  if "dtype" in kwargs:  # Configs name dtypes as strings ('bfloat16').
    kwargs["dtype"] = compute_dtype(kwargs)
  return cls(**kwargs, kernels=kernels)
