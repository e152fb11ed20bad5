"""Per-example image augmentations in NumPy + PIL, seeded, as Grain transforms.

The SimCLR pipeline (Chen et al. 2020, appendix A): random resized crop -> horizontal flip ->
colour jitter (p=0.8; brightness, contrast, saturation, hue in random order) -> random grayscale
(p=0.2) -> Gaussian blur (sigma in [0.1, 2.0], kernel 10% of the image side) -> optional
solarisation (BYOL, Grill et al. 2020, table 6) -> float32, normalised with the dataset's mean/std.
Saturation, hue and grayscale only act on RGB images; grayscale images get brightness and
contrast jitter.

Pieces are plain functions of (array, rng) so later methods can recombine them: BYOL uses two
`SimCLRAugment`s with different blur/solarize probabilities in `TwoViews`; multi-crop (DINO) uses
several with different crop scales and output sizes. Every class lives at module level so Grain
worker processes can pickle it.
"""

import dataclasses
import math

import grain
import numpy as np
from PIL import Image

from jaxssl.data import device_augment

# ITU-R BT.601 luma weights, as in tf.image.rgb_to_grayscale.
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)
# RGB <-> YIQ. A hue shift by a fraction d of a turn is a rotation of the (I, Q) chroma plane
# by 2*pi*d, the linear approximation of an HSV hue shift (used e.g. by kornia).
_RGB_TO_YIQ = np.array(
  [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def sample_crop_box(
  rng: np.random.Generator,
  height: int,
  width: int,
  scale: tuple[float, float] = (0.2, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
  attempts: int = 10,
) -> tuple[int, int, int, int]:
  """Samples (top, left, crop_height, crop_width) as Inception-style random resized crop.

  Area fraction ~ U[scale], aspect ratio w/h log-uniform in `ratio` (Szegedy et al. 2015;
  SimCLR appendix A). If no sample fits in `attempts` tries, falls back to the largest central
  crop whose aspect ratio is clipped to `ratio` (torchvision's rule).
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    crop_w = int(round(math.sqrt(target_area * aspect)))
    crop_h = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      return top, left, crop_h, crop_w
  aspect = width / height
  if aspect < ratio[0]:
    crop_w, crop_h = width, int(round(width / ratio[0]))
  elif aspect > ratio[1]:
    crop_h, crop_w = height, int(round(height * ratio[1]))
  else:
    crop_h, crop_w = height, width
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resized_crop(
  image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
  """Crops `box` = (top, left, h, w) from uint8 [H, W, C] and resizes it bilinearly to `size`.

  PIL's bilinear filter widens its support when shrinking, so downsampling is antialiased.
  """
  top, left, crop_h, crop_w = box
  pil_box = (left, top, left + crop_w, top + crop_h)
  channels = [
    Image.fromarray(np.ascontiguousarray(image[..., c]), mode="L").resize(
      (size[1], size[0]), Image.BILINEAR, box=pil_box
    )
    for c in range(image.shape[-1])
  ]
  return np.stack([np.asarray(c) for c in channels], axis=-1)


def _grayscale(x: np.ndarray) -> np.ndarray:
  """Luma [H, W, 1] of a float image; the image itself if it has one channel."""
  if x.shape[-1] == 1:
    return x
  return (x @ _LUMA)[..., None]


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
  """x * factor (SimCLR v2 code's multiplicative brightness), clipped to [0, 1]."""
  return np.clip(x * factor, 0.0, 1.0)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
  """Scales deviations from the image's mean luma by `factor`, clipped to [0, 1]."""
  mean = _grayscale(x).mean()
  return np.clip((x - mean) * factor + mean, 0.0, 1.0)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
  """Blends an RGB image with its luma: gray + factor * (x - gray). Identity for 1 channel."""
  gray = _grayscale(x)
  return np.clip(gray + (x - gray) * factor, 0.0, 1.0)


def adjust_hue(x: np.ndarray, delta: float) -> np.ndarray:
  """Rotates RGB chroma by `delta` turns in YIQ space. Identity for 1 channel."""
  if x.shape[-1] != 3:
    return x
  angle = 2.0 * math.pi * delta
  cos, sin = math.cos(angle), math.sin(angle)
  rotation = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
  matrix = _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ
  return np.clip(x @ matrix.T, 0.0, 1.0)


def add_brightness(x: np.ndarray, delta: float) -> np.ndarray:
  """x + delta on every channel (tf.image.adjust_brightness, BYOL's form), clipped to [0, 1]."""
  return np.clip(x + delta, 0.0, 1.0)


def color_jitter(
  x: np.ndarray,
  rng: np.random.Generator,
  jitter: tuple[float, float, float, float],
  brightness_mode: str = "scale",
) -> np.ndarray:
  """Colour jitter with maxima `jitter` = (brightness b, contrast c, saturation s, hue h), the
  four adjustments in random order (torchvision `ColorJitter`; SimCLR's `color_jitter`).

  Contrast and saturation factors ~ U[max(0, 1 - v), 1 + v], hue shift ~ U[-h, h]; brightness
  is a factor ~ U[max(0, 1 - b), 1 + b] ('scale': torchvision, SimCLR v2 code) or a shift
  ~ U[-b, b] ('add': BYOL's `augmentations.py`). SimCLR's strength s is
  `simclr_jitter(s)` = (0.8 s, 0.8 s, 0.8 s, 0.2 s) (Chen et al. 2020, appendix A).
  """
  bright, contrast, saturation, hue = jitter

  def factor(v):
    return rng.uniform(max(0.0, 1.0 - v), 1.0 + v)

  if brightness_mode == "add":
    brighten = lambda y: add_brightness(y, rng.uniform(-bright, bright))  # noqa: E731
  else:
    brighten = lambda y: adjust_brightness(y, factor(bright))  # noqa: E731
  ops = [
    brighten,
    lambda y: adjust_contrast(y, factor(contrast)),
    lambda y: adjust_saturation(y, factor(saturation)),
    lambda y: adjust_hue(y, rng.uniform(-hue, hue)),
  ]
  for index in rng.permutation(len(ops)):
    x = ops[index](x)
  return x


simclr_jitter = device_augment.simclr_jitter


def gaussian_blur(x: np.ndarray, sigma: float, radius: int) -> np.ndarray:
  """Separable Gaussian blur of [H, W, C] with a (2 radius + 1)-tap normalised kernel.

  Borders are extended by mirroring (half-sample symmetric, scipy.ndimage's 'reflect'), so a
  constant image stays constant.
  """
  if radius <= 0:
    return x
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
  kernel = (kernel / kernel.sum()).astype(x.dtype)
  height, width = x.shape[:2]
  padded = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
  rows = sum(k * padded[i : i + height] for i, k in enumerate(kernel))
  return sum(k * rows[:, i : i + width] for i, k in enumerate(kernel))


def solarize(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Inverts pixels at or above `threshold`: x if x < t else 1 - x (BYOL, table 6)."""
  return np.where(x < threshold, x, 1.0 - x)


def normalize(x: np.ndarray, mean, std) -> np.ndarray:
  """(x - mean) / std per channel, float32."""
  return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def _as_hwc(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"Expected a uint8 image [H, W, C], got {image.dtype} {image.shape}.")
  return image


def _check_probability(name: str, value: float) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name}={value} must be a probability in [0, 1].")


@dataclasses.dataclass(frozen=True)
class SimCLRAugment:
  """One random view: uint8 [H, W, C] -> float32 [S, S, C], normalised.

  Defaults follow SimCLR's ImageNet recipe except two choices for small images: crop scale
  (0.2, 1) (MoCo v2's, also common on CIFAR; the paper's ImageNet value is (0.08, 1)) and
  jitter strength 0.5 (the paper's CIFAR-10 value; 1.0 on ImageNet): `jitter` holds the
  (brightness, contrast, saturation, hue) maxima, `simclr_jitter(0.5)` by default.
  BYOL's views: blur_prob 1.0 / 0.1 and solarize_prob 0.0 / 0.2.

  `placement` says where the steps after the crop run: 'host' (here), 'device' (here only
  the crop, returned as uint8 [S, S, C]; the train step runs `photometric()`, the same
  recipe in JAX: jaxssl/data/device_augment.py) or 'auto' (resolved per platform by
  `device_augment.place`; called directly, it stays on the host).
  """

  mean: tuple[float, ...]
  std: tuple[float, ...]
  output_size: int | None = None  # None: the input's height and width.
  crop_scale: tuple[float, float] = (0.2, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  jitter: tuple[float, float, float, float] = device_augment.simclr_jitter(0.5)
  brightness_mode: str = "scale"  # 'scale' (torchvision, SimCLR) | 'add' (BYOL)
  jitter_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel_fraction: float = 0.1
  solarize_prob: float = 0.0
  placement: str = "auto"

  def __post_init__(self):
    if self.placement not in device_augment.PLACEMENTS:
      raise ValueError(
        f"augment.placement={self.placement!r}; use one of {device_augment.PLACEMENTS}."
      )
    if len(self.mean) != len(self.std) or min(self.std) <= 0:
      raise ValueError(
        f"mean {self.mean} and std {self.std} need one entry per channel, "
        "std > 0; take them from datasets.get_info(name)."
      )
    if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
      raise ValueError(f"crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1.")
    if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
      raise ValueError(f"crop_ratio={self.crop_ratio} must satisfy 0 < low <= high.")
    if self.output_size is not None and self.output_size <= 0:
      raise ValueError(f"output_size={self.output_size} must be positive (or None).")
    device_augment.check_jitter(self.jitter, self.brightness_mode)
    for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
      _check_probability(name, getattr(self, name))

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = _as_hwc(image)
    if image.shape[-1] != len(self.mean):
      raise ValueError(
        f"Image has {image.shape[-1]} channels but mean/std have "
        f"{len(self.mean)}; use the statistics of this dataset."
      )
    height, width = image.shape[:2]
    size = (self.output_size or height, self.output_size or width)
    box = sample_crop_box(rng, height, width, self.crop_scale, self.crop_ratio)
    crop = resized_crop(image, box, size)
    if self.placement == "device":
      return crop
    x = crop.astype(np.float32) / 255.0
    if rng.random() < self.flip_prob:
      x = x[:, ::-1]
    if rng.random() < self.jitter_prob:
      x = color_jitter(x, rng, self.jitter, self.brightness_mode)
    if x.shape[-1] == 3 and rng.random() < self.grayscale_prob:
      x = np.repeat(_grayscale(x), 3, axis=-1)
    if rng.random() < self.blur_prob:
      # SimCLR: kernel side = 10% of the image side, radius = side // 2.
      radius = int(size[0] * self.blur_kernel_fraction) // 2
      x = gaussian_blur(x, rng.uniform(*self.blur_sigma), radius)
    if rng.random() < self.solarize_prob:
      x = solarize(x)
    return normalize(x, self.mean, self.std)

  def photometric(self) -> device_augment.Photometric:
    """This view's steps after the crop, as the device recipe."""
    fields = {f.name for f in dataclasses.fields(device_augment.Photometric)}
    return device_augment.Photometric(
      **{k: v for k, v in dataclasses.asdict(self).items() if k in fields}
    )


@dataclasses.dataclass(frozen=True)
class TwoViews(grain.transforms.RandomMap):
  """{'image', 'label'} -> {'view1', 'view2': f32 [S, S, C], 'label': int32}.

  Both views draw from the same per-example generator one after the other, so they are
  independent samples; `augment2` defaults to `augment1` (SimCLR), or differs (BYOL).
  """

  augment1: SimCLRAugment
  augment2: SimCLRAugment | None = None

  def random_map(self, element, rng: np.random.Generator):
    augment2 = self.augment2 or self.augment1
    return {
      "view1": self.augment1(element["image"], rng),
      "view2": augment2(element["image"], rng),
      "label": np.int32(element["label"]),
    }


@dataclasses.dataclass(frozen=True)
class Deterministic(grain.transforms.Map):
  """Evaluation preprocessing: central crop, resize, normalise -> {'image': f32, 'label'}.

  `crop_fraction` < 1 takes the central crop of that side fraction before resizing (e.g. 0.875
  for ImageNet-style eval); the default keeps the whole image.
  """

  mean: tuple[float, ...]
  std: tuple[float, ...]
  output_size: int | None = None
  crop_fraction: float = 1.0

  def __post_init__(self):
    if not 0.0 < self.crop_fraction <= 1.0:
      raise ValueError(f"crop_fraction={self.crop_fraction} must be in (0, 1].")

  def map(self, element):
    image = _as_hwc(element["image"])
    height, width = image.shape[:2]
    size = (self.output_size or height, self.output_size or width)
    crop_h = max(1, int(round(height * self.crop_fraction)))
    crop_w = max(1, int(round(width * self.crop_fraction)))
    box = ((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)
    if box != (0, 0, height, width) or size != (height, width):
      image = resized_crop(image, box, size)
    return {
      "image": normalize(image.astype(np.float32) / 255.0, self.mean, self.std),
      "label": np.int32(element["label"]),
    }
