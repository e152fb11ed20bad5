"""The photometric half of the view augmentations, in JAX, applied inside the jitted train step.

With `config.augment.placement = 'device'` the host (Grain) only decodes and crops: each view
leaves the pipeline as the uint8 random resized crop (4x fewer bytes than float32), and the
train step runs the rest of `augment.SimCLRAugment` on the accelerator before the method's
forward: horizontal flip, colour jitter (brightness, contrast, saturation, hue in random order),
grayscale, Gaussian blur, solarisation and normalisation, with the same parameter
distributions as the host code (augment.py's docstring gives the recipe). This is DeepMind's
JAX BYOL split (`byol/utils/augmentations.py`: crops in the input pipeline, `postprocess`
in the step). Each op is a pure function of one image and its parameters, vmapped over the
batch, so it shards with the batch and needs no gather.

Per-example parameters come from the step's key (`fold_in(state.rng, step)`, then
`fold_in(., AUGMENT_STREAM)`), so a resumed run draws the same ones and nothing is saved.
`place(transform, platform)` resolves a transform's placement ('auto': 'device' on GPU/TPU,
'host' on CPU; docs/performance_cpu.md, "Input pipeline") and returns it with the
`DeviceViews` the step applies (None when everything stays on the host).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

PLACEMENTS = ("auto", "host", "device")
# fold_in constant separating the augmentation's draws from the method's own use of the key.
AUGMENT_STREAM = 0x617567

# BT.601 luma and the RGB <-> YIQ matrices of the host code (augment.py).
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)
_RGB_TO_YIQ = np.array(
  [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


# ------------------------------------------------------------------ the ops, one image each


def grayscale(x: jax.Array) -> jax.Array:
  """Luma [H, W, 1] of a float image; the image itself if it has one channel."""
  if x.shape[-1] == 1:
    return x
  return (x @ jnp.asarray(_LUMA))[..., None]


def adjust_brightness(x: jax.Array, factor) -> jax.Array:
  """clip(x * factor, 0, 1), as `augment.adjust_brightness`."""
  return jnp.clip(x * factor, 0.0, 1.0)


def add_brightness(x: jax.Array, delta) -> jax.Array:
  """clip(x + delta, 0, 1), as `augment.add_brightness` (BYOL)."""
  return jnp.clip(x + delta, 0.0, 1.0)


def adjust_contrast(x: jax.Array, factor) -> jax.Array:
  """Deviations from the image's mean luma scaled by `factor`, clipped to [0, 1]."""
  mean = grayscale(x).mean()
  return jnp.clip((x - mean) * factor + mean, 0.0, 1.0)


def adjust_saturation(x: jax.Array, factor) -> jax.Array:
  """gray + factor * (x - gray), clipped to [0, 1]; identity for one channel."""
  gray = grayscale(x)
  return jnp.clip(gray + (x - gray) * factor, 0.0, 1.0)


def adjust_hue(x: jax.Array, delta) -> jax.Array:
  """RGB chroma rotated by `delta` turns in YIQ space; identity unless 3 channels."""
  if x.shape[-1] != 3:
    return x
  angle = 2.0 * jnp.pi * delta
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  zero, one = jnp.zeros_like(cos), jnp.ones_like(cos)
  rotation = jnp.stack(
    [jnp.stack([one, zero, zero]), jnp.stack([zero, cos, -sin]), jnp.stack([zero, sin, cos])]
  )
  matrix = jnp.asarray(_YIQ_TO_RGB) @ rotation @ jnp.asarray(_RGB_TO_YIQ)
  return jnp.clip(x @ matrix.T, 0.0, 1.0)


def gaussian_blur(x: jax.Array, sigma, radius: int) -> jax.Array:
  """Separable (2 radius + 1)-tap normalised Gaussian blur of [H, W, C], mirrored borders
  (numpy's 'symmetric' padding, as `augment.gaussian_blur`). `radius` is static."""
  if radius <= 0:
    return x
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-(offsets**2) / (2.0 * sigma**2))
  kernel = kernel / kernel.sum()
  height, width = x.shape[:2]
  padded = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
  rows = sum(kernel[i] * padded[i : i + height] for i in range(2 * radius + 1))
  return sum(kernel[i] * rows[:, i : i + width] for i in range(2 * radius + 1))


def solarize(x: jax.Array, threshold: float = 0.5) -> jax.Array:
  """x where x < threshold, else 1 - x (BYOL, table 6)."""
  return jnp.where(x < threshold, x, 1.0 - x)


# ------------------------------------------------------------------ one view's recipe

BRIGHTNESS_MODES = ("scale", "add")


def simclr_jitter(strength: float) -> tuple[float, float, float, float]:
  """SimCLR's colour distortion of strength s as (brightness, contrast, saturation, hue) maxima:
  (0.8 s, 0.8 s, 0.8 s, 0.2 s) (Chen et al. 2020, appendix A; TF2 `color_jitter`)."""
  return (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)


def check_jitter(jitter, brightness_mode: str) -> None:
  """Raises ValueError unless `jitter` is four maxima >= 0 (hue <= 0.5) and the mode known."""
  if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
    raise ValueError(
      f"jitter={tuple(jitter)} must be (brightness, contrast, saturation, hue) maxima >= 0 "
      "with hue <= 0.5, e.g. (0.4, 0.4, 0.2, 0.1)."
    )
  if brightness_mode not in BRIGHTNESS_MODES:
    raise ValueError(f"brightness_mode={brightness_mode!r}; use one of {BRIGHTNESS_MODES}.")


@dataclasses.dataclass(frozen=True)
class Photometric:
  """The device half of one `augment.SimCLRAugment`, made by its `photometric()`: the fields
  that act after the crop (their defaults and checks live there, once)."""

  mean: tuple[float, ...]
  std: tuple[float, ...]
  flip_prob: float
  jitter: tuple[float, float, float, float]
  brightness_mode: str
  jitter_prob: float
  grayscale_prob: float
  blur_prob: float
  blur_sigma: tuple[float, float]
  blur_kernel_fraction: float
  solarize_prob: float

  def sample(self, key: jax.Array, n: int) -> dict[str, jax.Array]:
    """Per-example parameters [n] (`order` [n, 4]), drawn as the host code draws them
    (`augment.color_jitter`): factors ~ U[max(0, 1 - v), 1 + v] for the `jitter` maxima v
    (brightness a shift ~ U[-b, b] in 'add' mode), hue ~ U[-h, h], the four jitter ops in a
    uniformly random order, blur sigma ~ U[blur_sigma]."""
    bright, contrast, saturation, hue = self.jitter
    keys = dict(zip(PARAMS, jax.random.split(key, len(PARAMS))))

    def uniform(name, lo=0.0, hi=1.0):
      return jax.random.uniform(keys[name], (n,), jnp.float32, lo, hi)

    def factor(name, v):
      return uniform(name, max(0.0, 1.0 - v), 1.0 + v)

    return dict(
      flip=uniform("flip") < self.flip_prob,
      jitter=uniform("jitter") < self.jitter_prob,
      brightness=(
        uniform("brightness", -bright, bright)
        if self.brightness_mode == "add"
        else factor("brightness", bright)
      ),
      contrast=factor("contrast", contrast),
      saturation=factor("saturation", saturation),
      hue=uniform("hue", -hue, hue),
      # argsort of i.i.d. uniforms is a uniformly random permutation.
      order=jnp.argsort(jax.random.uniform(keys["order"], (n, 4)), axis=-1),
      grayscale=uniform("grayscale") < self.grayscale_prob,
      blur=uniform("blur") < self.blur_prob,
      sigma=uniform("sigma", *self.blur_sigma),
      solarize=uniform("solarize") < self.solarize_prob,
    )

  def apply_one(self, image: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    """uint8 [S, S, C] crop -> float32 normalised view, with parameters `p` (scalars)."""
    x = image.astype(jnp.float32) / 255.0
    x = jnp.where(p["flip"], x[:, ::-1], x)
    jittered = x
    brighten = add_brightness if self.brightness_mode == "add" else adjust_brightness
    ops = (
      lambda y: brighten(y, p["brightness"]),
      lambda y: adjust_contrast(y, p["contrast"]),
      lambda y: adjust_saturation(y, p["saturation"]),
      lambda y: adjust_hue(y, p["hue"]),
    )
    for position in range(4):
      jittered = jax.lax.switch(p["order"][position], ops, jittered)
    x = jnp.where(p["jitter"], jittered, x)
    if x.shape[-1] == 3:
      x = jnp.where(p["grayscale"], jnp.repeat(grayscale(x), 3, axis=-1), x)
    radius = int(x.shape[0] * self.blur_kernel_fraction) // 2  # SimCLR: side // 10, halved
    x = jnp.where(p["blur"], gaussian_blur(x, p["sigma"], radius), x)
    x = jnp.where(p["solarize"], solarize(x), x)
    mean, std = jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.std, jnp.float32)
    return (x - mean) / std

  def __call__(self, images: jax.Array, key: jax.Array) -> jax.Array:
    """uint8 [n, S, S, C] crops -> float32 [n, S, S, C] views."""
    params = self.sample(key, images.shape[0])
    return jax.vmap(self.apply_one)(images, params)


PARAMS = (
  "flip",
  "jitter",
  "brightness",
  "contrast",
  "saturation",
  "hue",
  "order",
  "grayscale",
  "blur",
  "sigma",
  "solarize",
)


# ------------------------------------------------------------------ a batch's views


@dataclasses.dataclass(frozen=True)
class DeviceViews:
  """Which batch entries get which `Photometric`, and how to apply them in the step.

  `views` maps a batch key to one recipe per slot: ('view1', (p,)) for [B, S, S, C] entries,
  ('global_crops', (p1, p2)) for stacked [B, G, S, S, C] ones (slot g gets recipe g).
  """

  views: tuple[tuple[str, tuple[Photometric, ...]], ...]

  def output_spec(self, spec: Mapping[str, jax.ShapeDtypeStruct]) -> dict:
    """The batch shapes the method sees: these entries as float32."""
    keys = dict(self.views)
    return {
      k: jax.ShapeDtypeStruct(v.shape, jnp.float32) if k in keys else v for k, v in spec.items()
    }

  def __call__(self, batch: Mapping[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    """The batch with its uint8 crops turned into float32 views (pure; traced in the step)."""
    key = jax.random.fold_in(key, AUGMENT_STREAM)
    out = dict(batch)
    for index, (name, recipes) in enumerate(self.views):
      x, view_key = batch[name], jax.random.fold_in(key, index)
      if x.ndim == 4:
        out[name] = recipes[0](x, view_key)
        continue
      parts, start = [], 0
      for recipe, count in _runs(recipes):  # equal recipes in one vmap (DINO's local crops)
        part = x[:, start : start + count]
        flat = part.reshape((-1,) + part.shape[2:])
        views = recipe(flat, jax.random.fold_in(view_key, start))
        parts.append(views.reshape(part.shape))
        start += count
      out[name] = jnp.concatenate(parts, axis=1)
    return out


def _runs(recipes):
  """[(recipe, count)] over consecutive equal recipes."""
  runs = []
  for recipe in recipes:
    if runs and runs[-1][0] == recipe:
      runs[-1][1] += 1
    else:
      runs.append([recipe, 1])
  return [tuple(r) for r in runs]


def resolve(placement: str, platform: str) -> str:
  """'host' or 'device' for `placement` on devices of `platform` ('auto': device off CPU)."""
  if placement not in PLACEMENTS:
    raise ValueError(f"augment.placement={placement!r}; use one of {PLACEMENTS}.")
  if placement == "auto":
    return "host" if platform == "cpu" else "device"
  return placement


def place(transform, platform: str):
  """(transform with each view's placement resolved, DeviceViews or None).

  Walks the view transforms that carry `SimCLRAugment`s (`augment.TwoViews`,
  `multicrop.MultiCrop`); any other transform is returned unchanged with None.
  """
  from jaxssl.data import augment, multicrop  # pylint: disable=g-import-not-at-top

  def resolved(aug):
    return dataclasses.replace(aug, placement=resolve(aug.placement, platform))

  if isinstance(transform, augment.TwoViews):
    first = resolved(transform.augment1)
    second = resolved(transform.augment2 or transform.augment1)
    placed = dataclasses.replace(transform, augment1=first, augment2=second)
    pairs = (("view1", first), ("view2", second))
  elif isinstance(transform, multicrop.MultiCrop):
    globals_ = tuple(resolved(a) for a in transform.global_augments)
    local = transform.local_augment and resolved(transform.local_augment)
    placed = dataclasses.replace(transform, global_augments=globals_, local_augment=local)
    pairs = (("global_crops", globals_), ("local_crops", (local,) * transform.num_local))
  else:
    return transform, None
  views = []
  for name, augs in pairs:
    augs = augs if isinstance(augs, tuple) else (augs,)
    kinds = {a.placement for a in augs}
    if len(kinds) > 1:
      raise ValueError(f"the views of {name!r} mix host and device placement; use one.")
    if kinds == {"device"}:
      views.append((name, tuple(a.photometric() for a in augs)))
  return placed, (DeviceViews(tuple(views)) if views else None)
