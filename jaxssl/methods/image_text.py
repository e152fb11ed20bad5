"""The two-tower image-text model and method base that CLIP and SigLIP share.

An image tower (any backbone of `config.model`, a ViT in the presets) and a text tower (the
transformer encoder of `config.text_model`, pooled) are each followed by a linear projection
without bias to a shared `config.image_text.embed_dim` (CLIP, Radford et al. 2021, fig. 3:
W_i, W_t). The losses normalise the embeddings. The learned scalars of the loss (CLIP's
temperature, SigLIP's temperature and bias) are parameters of the model, so the optimizer and
checkpoints treat them like every other weight (they are scalars, hence never weight-decayed:
jaxssl.optim.decay_mask). Subclasses give the scalars' initial values and the loss.

Batch: {'image': f32 [B, S, S, C], 'tokens': int32 [B, L]} from `train_transform`: one
random-resized-crop view of the image (CLIP trains on a random square crop, sec. 2.5) and the
tokenised caption text. `caption_text` composes the text from the example's fields named in
`config.image_text.text_fields` ('caption', 'keywords'); the eval job composes retrieval texts
with the same function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import models
from jaxssl.data import augment
from jaxssl.data import image_text as image_text_data
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.methods import common
from jaxssl.models import transformer


def caption_text(element: dict[str, Any], fields: Sequence[str]) -> str:
  """The training text of an example: its text fields joined by spaces, e.g.
  'A frog. animals amphibians frog' for fields ('caption', 'keywords')."""
  missing = [f for f in fields if f not in element]
  if missing:
    raise ValueError(
      f"Example has no text field(s) {missing} (it has {sorted(element)}); "
      "image-text methods need an image-caption dataset such as "
      "tuxpaint_stamps, and config.image_text.text_fields naming its fields."
    )
  return " ".join(image_text_data.as_text(element[f]) for f in fields).strip()


def encode_text(tokenizer, text: str, max_len: int) -> np.ndarray:
  """int32 [max_len]: the text's ids cut to max_len - 1, then end-of-text, then padding (CLIP
  sec. 2.4 brackets the text with [SOS]/[EOS] and reads the tower at [EOS])."""
  ids = list(tokenizer.encode(text))[: max_len - 1] + [tokenizer.eos_id]
  out = np.full((max_len,), tokenizer.pad_id, np.int32)
  out[: len(ids)] = ids
  return out


@dataclasses.dataclass(frozen=True)
class ImageTextTransform(grain.transforms.RandomMap):
  """{'image', 'label', text fields} -> {'image': f32 view, 'tokens': int32 [L], 'label'}."""

  view: augment.SimCLRAugment
  tokenizer: Any
  max_len: int
  text_fields: tuple[str, ...]

  def random_map(self, element, rng: np.random.Generator):
    return {
      "image": self.view(element["image"], rng),
      "tokens": encode_text(self.tokenizer, caption_text(element, self.text_fields), self.max_len),
      "label": np.int32(element["label"]),
    }


def build_text_encoder(
  text_model: ml_collections.ConfigDict, tokenizer, kernels: Kernels = REFERENCE, dtype=None
) -> nn.Module:
  """CLIP's text tower (sec. 2.4): a causal transformer read at the end-of-text token, with no
  LM head. Causal attention makes padding after the end-of-text token irrelevant. It computes
  in `dtype` (the image tower's `model.dtype`: mixed precision covers both towers)."""
  return transformer.Transformer(
    vocab_size=tokenizer.vocab_size,
    causal=True,
    lm_head=False,
    pool="eos",
    eos_id=tokenizer.eos_id,
    pad_id=tokenizer.pad_id,
    kernels=kernels,
    **{"dtype": dtype or jnp.float32, **text_model.to_dict()},
  )


def _projection(dim: int, name: str) -> nn.Dense:
  # CLIP's W_i / W_t: linear, no bias, float32 (no backend kernel applies). Input is the
  # tower width ('embed').
  return nn.Dense(
    dim,
    use_bias=False,
    param_dtype=jnp.float32,
    name=name,
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
  )


class TwoTower(nn.Module):
  """Image and text towers with projections to a shared space, plus the loss's scalars."""

  image_encoder: nn.Module
  text_encoder: nn.Module
  embed_dim: int
  scalar_inits: tuple[tuple[str, float], ...]

  def setup(self):
    self.image_proj = _projection(self.embed_dim, "image_proj")
    self.text_proj = _projection(self.embed_dim, "text_proj")
    self.scalars = {
      name: self.param(name, nn.initializers.constant(value), (), jnp.float32)
      for name, value in self.scalar_inits
    }

  def encode(self, images):
    """Image-tower features (before the projection) for linear / kNN / few-shot eval."""
    return self.image_encoder(images, train=False)[0]

  def embed_images(self, images, train: bool = False):
    features, _ = self.image_encoder(images, train=train)
    return self.image_proj(features).astype(jnp.float32)

  def embed_texts(self, tokens, train: bool = False):
    pooled = self.text_encoder(tokens, train=train)[0]
    return self.text_proj(pooled).astype(jnp.float32)

  def __call__(self, images, tokens, train: bool = False):
    """(image embeddings [B, E], text embeddings [B, E], {scalar name: value})."""
    return (
      self.embed_images(images, train=train),
      self.embed_texts(tokens, train=train),
      dict(self.scalars),
    )


class ImageTextMethod:
  """Base of CLIP and SigLIP: model, data transform, init, encoders for the eval job.

  Subclasses implement `initial_scalars(config)` ((name, initial value) pairs of the loss's
  learned scalars) and `contrastive_loss(img, txt, scalars) -> (loss, metrics)`.
  """

  batch_keys = ("image", "tokens")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.text_fields = tuple(config.image_text.text_fields)
    self.max_len = config.text_model.max_len
    self.tokenizer = tokenizer_lib.get_tokenizer(config.tokenizer)
    self.model = TwoTower(
      image_encoder=models.build_encoder(config.model, kernels),
      text_encoder=build_text_encoder(
        config.text_model, self.tokenizer, kernels, models.compute_dtype(config.model)
      ),
      embed_dim=config.image_text.embed_dim,
      scalar_inits=self.initial_scalars(config),
    )

  # ------------------------------------------------------------------------------- data
  def caption_text(self, element) -> str:
    return caption_text(element, self.text_fields)

  def tokenize(self, text: str) -> np.ndarray:
    return encode_text(self.tokenizer, text, self.max_len)

  def train_transform(self, info):
    a = self.config.augment
    view = augment.SimCLRAugment(
      mean=info.mean,
      std=info.std,
      output_size=self.config.data.image_size,
      crop_scale=tuple(a.crop_scale),
      flip_prob=a.flip_prob,
      jitter_prob=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return ImageTextTransform(
      view=view, tokenizer=self.tokenizer, max_len=self.max_len, text_fields=self.text_fields
    )

  # ------------------------------------------------------------------------------- model
  def init(self, rng, batch):
    params, model_state = common.init_variables(
      self.model, rng, batch["image"], batch["tokens"], train=False
    )
    return params, {"model_state": model_state}

  def initial_scalars(self, config) -> tuple[tuple[str, float], ...]:
    raise NotImplementedError

  def contrastive_loss(self, img, txt, scalars):
    raise NotImplementedError

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    (img, txt, scalars), model_state = common.apply_model(
      self.model,
      params,
      aux["model_state"],
      batch["image"],
      batch["tokens"],
      train=True,
      rngs={"dropout": rng},
    )
    loss, metrics = self.contrastive_loss(img, txt, scalars)
    metrics.update(common.collapse_metrics(img))
    return loss, (metrics, {**aux, "model_state": model_state})

  def post_update(self, state):
    return state

  def _apply(self, params, aux, x, method):
    out, _ = common.apply_model(
      self.model, params, aux["model_state"], x, train=False, method=method
    )
    return out

  def encode(self, params, aux, images):
    """Frozen image-tower features [B, width] for the vision eval protocols."""
    return self._apply(params, aux, images, TwoTower.encode)

  def embed_images(self, params, aux, images):
    """Image embeddings [B, E] in the shared space (zero-shot / retrieval)."""
    return self._apply(params, aux, images, TwoTower.embed_images)

  def embed_texts(self, params, aux, tokens):
    """Text embeddings [B, E] in the shared space (zero-shot / retrieval)."""
    return self._apply(params, aux, tokens, TwoTower.embed_texts)
