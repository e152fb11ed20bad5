"""I-JEPA multi-block masks (Assran et al. 2023, sec. 3 and fig. 4), made in the data pipeline.

Per image, on the H x W patch grid:
  * targets: `num_targets` (4) rectangular blocks, all of one size drawn from scale
    (0.15, 0.2) of the grid and aspect ratio h / w in (0.75, 1.5); blocks may overlap;
  * context: one block of scale (0.85, 1.0), aspect 1, from which every target patch is
    removed, so the context never sees what it has to predict.
Block sizes follow the official `MaskCollator._sample_block_size`: keep = int(H W s),
h = round(sqrt(keep a)), w = round(sqrt(keep / a)), then shrunk below the grid side (so a block
never spans a whole row or column). Two deliberate differences: scale and aspect are drawn
independently (the official code reuses one uniform for both), and the target size is drawn per
image rather than once per batch (a per-example transform cannot see the batch).

Fixed sizes. XLA needs one shape per batch, but blocks differ in size. The official collator
truncates every mask to the smallest count in the batch (keeping the first patches in
row-major order). Here the counts are fixed by the config, per example, so nothing is padded:
  * each target block keeps `target_patches` of its patches, a uniformly random subset (the
    smallest block the ranges allow must hold them; checked at construction);
  * the context keeps `context_patches` of its patches, a random subset; if the context block
    minus the targets is smaller, everything is redrawn (the official code also redraws
    contexts that keep fewer than `min_keep` patches); after `max_tries` draws, the last draw's
    context is topped up with random patches outside the context block that are not targets,
    so context and targets still never overlap.
Because every index is a real, valid patch, no validity mask is needed downstream: the encoder
drops tokens with `keep_indices` and the loss averages over all predicted patches.

Everything is drawn from the example's NumPy generator, so a mask is a pure function of the
seed and the example's position (a restored iterator replays the same masks).
"""

import dataclasses
import math

import grain
import numpy as np

from jaxssl.data import augment as augment_lib


def block_size(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
  """(h, w) of a block covering `scale` of the grid with aspect h / w, as the official code."""
  height, width = grid
  keep = int(height * width * scale)
  h = int(round(math.sqrt(keep * aspect)))
  w = int(round(math.sqrt(keep / aspect)))
  # Official rule: a block is strictly smaller than the grid in each direction.
  h, w = min(h, height - 1), min(w, width - 1)
  return max(h, 1), max(w, 1)


def block_area_range(grid, scale_range, aspect_range, num=257) -> tuple[int, int]:
  """(min, max) of h * w over a dense grid of (scale, aspect) in the ranges (inclusive)."""
  areas = [
    np.prod(block_size(grid, s, a))
    for s in np.linspace(*scale_range, num)
    for a in np.linspace(*aspect_range, num)
  ]
  return int(min(areas)), int(max(areas))


def _sample_size(rng, grid, scale_range, aspect_range):
  return block_size(grid, rng.uniform(*scale_range), rng.uniform(*aspect_range))


def _place_block(rng, grid, size) -> np.ndarray:
  """Bool [H, W] mask of an (h, w) block at a uniformly random position."""
  (height, width), (h, w) = grid, size
  top = rng.integers(0, height - h + 1)
  left = rng.integers(0, width - w + 1)
  mask = np.zeros(grid, bool)
  mask[top : top + h, left : left + w] = True
  return mask


def _subset(rng, mask_flat: np.ndarray, count: int) -> np.ndarray:
  """`count` indices of the True entries of `mask_flat`, a uniformly random subset, sorted."""
  return np.sort(rng.choice(np.flatnonzero(mask_flat), count, replace=False)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class MultiBlockMasker:
  """Draws I-JEPA's context and target indices for one image (see the module docstring)."""

  grid: tuple[int, int]
  target_patches: int
  context_patches: int
  num_targets: int = 4
  target_scale: tuple[float, float] = (0.15, 0.2)
  target_aspect: tuple[float, float] = (0.75, 1.5)
  context_scale: tuple[float, float] = (0.85, 1.0)
  context_aspect: tuple[float, float] = (1.0, 1.0)
  max_tries: int = 20

  def __post_init__(self):
    for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
      low, high = getattr(self, name)
      if not 0 < low <= high:
        raise ValueError(f"{name}={(low, high)} must satisfy 0 < low <= high.")
    if self.num_targets < 1:
      raise ValueError(f"num_targets={self.num_targets} must be >= 1 (the paper uses 4).")
    smallest, _ = block_area_range(self.grid, self.target_scale, self.target_aspect)
    if not 1 <= self.target_patches <= smallest:
      raise ValueError(
        f"target_patches={self.target_patches} must be in [1, {smallest}]: every target "
        f"block keeps that many patches and the smallest block the ranges allow on the "
        f"{self.grid} grid has {smallest}. Lower target_patches or raise target_scale."
      )
    num_patches = self.grid[0] * self.grid[1]
    _, largest = block_area_range(self.grid, self.target_scale, self.target_aspect)
    if not 1 <= self.context_patches <= num_patches - largest:
      raise ValueError(
        f"context_patches={self.context_patches} must be in [1, {num_patches - largest}] "
        f"(grid {self.grid}, target blocks up to {largest} patches). Lower it."
      )

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns context_indices int32 [context_patches] and target_indices int32
    [num_targets, target_patches], row-major patch indices, disjoint sets."""
    for _ in range(self.max_tries):
      target_size = _sample_size(rng, self.grid, self.target_scale, self.target_aspect)
      targets = [_place_block(rng, self.grid, target_size) for _ in range(self.num_targets)]
      union = np.any(targets, axis=0).reshape(-1)
      context_block = _place_block(
        rng, self.grid, _sample_size(rng, self.grid, self.context_scale, self.context_aspect)
      ).reshape(-1)
      context = context_block & ~union
      if context.sum() >= self.context_patches:
        break
    else:
      # Rare: top the context up with non-target patches outside the context block.
      if (~union).sum() < self.context_patches:
        raise ValueError(
          f"{self.max_tries} draws left fewer than context_patches={self.context_patches} "
          f"non-target patches on the {self.grid} grid; lower context_patches."
        )
      extra = self.context_patches - context.sum()
      context = context | np.isin(
        np.arange(self.num_patches), _subset(rng, ~union & ~context, extra)
      )
    context_indices = _subset(rng, context, self.context_patches)
    target_indices = np.stack([_subset(rng, t.reshape(-1), self.target_patches) for t in targets])
    return context_indices, target_indices


@dataclasses.dataclass(frozen=True)
class MultiBlockView(grain.transforms.RandomMap):
  """{'image', 'label'} -> one augmented view and its I-JEPA masks.

  Output: 'image' f32 [S, S, C], 'context_indices' int32 [context_patches],
  'target_indices' int32 [num_targets, target_patches] and 'label' int32. The augmentation
  and the masks draw from the same per-element generator, one after the other.
  """

  augment: augment_lib.SimCLRAugment
  masker: MultiBlockMasker
  patch_size: int
  image_size: int

  def __post_init__(self):
    side = self.image_size // self.patch_size
    if self.image_size % self.patch_size or self.masker.grid != (side, side):
      raise ValueError(
        f"The masker grid {self.masker.grid} must be image_size / patch_size "
        f"= {self.image_size} / {self.patch_size} per side."
      )

  def random_map(self, element, rng: np.random.Generator):
    image = self.augment(element["image"], rng)
    context_indices, target_indices = self.masker(rng)
    return {
      "image": image,
      "context_indices": context_indices,
      "target_indices": target_indices,
      "label": np.int32(element["label"]),
    }
