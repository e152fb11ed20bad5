"""Block masks made in the data pipeline: I-JEPA's multi-block context and targets, and
iBOT's block-wise masks of the student's global crops.

I-JEPA (Assran et al. 2023, sec. 3 and fig. 4), `MultiBlockMasker`; per image, on the H x W
patch grid:
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

iBOT (Zhou et al. 2022, sec. 3; the official `loader.py` `ImageFolderMask`, which follows BEiT's
`MaskingGenerator`, Bao et al. 2022, alg. 1), `BlockMasking` / `block_mask`: with probability
`prob` an image gets a prediction ratio r ~ U[ratio] and rectangles of random area and aspect
are masked until int(r N) patches are; otherwise it is left unmasked. The output is a fixed
[N] boolean mask, so no padding is needed either.

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


def block_mask(
  rng: np.random.Generator,
  grid: tuple[int, int],
  num_masked: int,
  *,
  min_block: int = 4,
  max_block: int | None = None,
  aspect: tuple[float, float] = (0.3, 1 / 0.3),
  attempts: int = 10,
) -> np.ndarray:
  """iBOT's (BEiT's) block-wise mask of about `num_masked` patches on a `grid` (rows, cols).

  Repeatedly draws a rectangle of target area ~ U[min_block, budget] (budget: the patches still
  to mask, at most `max_block`, BEiT's `max_num_patches`) and log-uniform
  aspect ratio and masks its not-yet-masked patches, when the rectangle is strictly smaller
  than the grid on both sides and adds between 1 and the budget patches (10 attempts per
  block); stops when `num_masked` patches are masked or no attempt succeeds. Never masks more
  than `num_masked` patches.

  When the budget is below `min_block` the area is still drawn between the two: the official
  `random.uniform(low, max_mask_patches)` with max < low returns a value in [max, low]
  (`loader.py`; DINOv2's `masking.py` alike), so late blocks are often too large and the mask
  can end a few patches short of the budget.

  Returns:
    bool [rows * cols], row-major, True where the patch is masked.
  """
  rows, cols = grid
  mask = np.zeros(grid, bool)
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  count = 0
  while count < num_masked:
    budget = num_masked - count if max_block is None else min(num_masked - count, max_block)
    # Sorted bounds: NumPy's uniform(low, high) is undefined for high < low.
    low, high = sorted((min_block, budget))
    added = 0
    for _ in range(attempts):
      area = rng.uniform(low, high)
      ratio = math.exp(rng.uniform(*log_aspect))
      h = int(round(math.sqrt(area * ratio)))
      w = int(round(math.sqrt(area / ratio)))
      if 0 < h < rows and 0 < w < cols:
        top = int(rng.integers(0, rows - h + 1))
        left = int(rng.integers(0, cols - w + 1))
        new = h * w - int(mask[top : top + h, left : left + w].sum())
        if 0 < new <= budget:
          mask[top : top + h, left : left + w] = True
          added = new
          break
    if added == 0:
      break
    count += added
  return mask.reshape(-1)


@dataclasses.dataclass(frozen=True)
class BlockMasking:
  """iBOT's per-image mask policy: with probability `prob` a block mask of ratio
  r ~ U[ratio], else no mask. `__call__(rng)` returns bool [rows * cols]."""

  grid: tuple[int, int]
  ratio: tuple[float, float] = (0.1, 0.5)
  prob: float = 0.5
  min_block: int = 4

  def __post_init__(self):
    if not 0.0 <= self.ratio[0] <= self.ratio[1] < 1.0:
      raise ValueError(
        f"mask ratio range {self.ratio} must satisfy 0 <= low <= high < 1 (iBOT: (0.1, 0.5))."
      )
    if not 0.0 <= self.prob <= 1.0:
      raise ValueError(f"mask probability {self.prob} must be in [0, 1] (iBOT: 0.5).")
    if min(self.grid) < 2:
      raise ValueError(
        f"patch grid {self.grid} is too small for block masks (blocks are "
        "strictly smaller than the grid); use a smaller patch size."
      )
    if self.min_block < 1:
      raise ValueError(f"min_block={self.min_block} must be >= 1 patch (iBOT: 16 on 14 x 14).")

  def __call__(self, rng: np.random.Generator) -> np.ndarray:
    num_patches = self.grid[0] * self.grid[1]
    if rng.random() >= self.prob:
      return np.zeros(num_patches, bool)
    num_masked = int(rng.uniform(*self.ratio) * num_patches)
    return block_mask(rng, self.grid, num_masked, min_block=self.min_block)
