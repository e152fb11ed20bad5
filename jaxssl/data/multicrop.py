"""DINO multi-crop views and iBOT block-wise patch masks, as one seeded Grain transform.

Multi-crop (Caron et al. 2020, SwAV sec. 3.2; DINO, Caron et al. 2021, sec. 3.1 and the
official `DataAugmentationDINO`): two global crops (random resized crop of scale (0.4, 1) in
DINO's code, at the global size) and N local crops (scale (0.05, 0.4), at a smaller local
size), each with flip, colour jitter and grayscale; Gaussian blur with probability 1.0 on the
first global crop, 0.1 plus solarisation 0.2 on the second, 0.5 on the locals.

iBOT (Zhou et al. 2022, sec. 3 and its `ImageFolderMask`) masks the student's global crops
block-wise (BEiT's `MaskingGenerator`, Bao et al. 2022, alg. 1): with probability
`mask_prob` an image gets a prediction ratio r ~ U[ratio range] and rectangles of random area
and aspect ratio are masked until r N patches are; otherwise it is left unmasked. Masks are
drawn here, from the example's generator, so they are a pure function of the seed and the
example's position (a restored iterator replays them) and fixed-shape for XLA.
"""

import dataclasses
import math

import grain
import numpy as np

from jaxssl.data import augment as augment_lib


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
  """BEiT's block-wise mask of about `num_masked` patches on a `grid` (rows, cols).

  Repeatedly draws a rectangle of area ~ U[min_block, remaining] and log-uniform aspect ratio
  inside the grid and masks its not-yet-masked patches, as long as that adds between 1 and the
  remaining budget patches (10 attempts per block); stops when `num_masked` patches are masked
  or no rectangle fits. Never masks more than `num_masked` patches.

  Returns:
    bool [rows * cols], row-major, True where the patch is masked.
  """
  rows, cols = grid
  mask = np.zeros(grid, bool)
  max_block = num_masked if max_block is None else max_block
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  count = 0
  while count < num_masked:
    budget = min(num_masked - count, max_block)
    added = 0
    for _ in range(attempts):
      area = rng.uniform(min_block, budget) if budget > min_block else float(budget)
      ratio = math.exp(rng.uniform(*log_aspect))
      h = int(round(math.sqrt(area * ratio)))
      w = int(round(math.sqrt(area / ratio)))
      # BEiT requires the block to be strictly smaller than the grid on both sides.
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

  def __call__(self, rng: np.random.Generator) -> np.ndarray:
    num_patches = self.grid[0] * self.grid[1]
    if rng.random() >= self.prob:
      return np.zeros(num_patches, bool)
    num_masked = int(rng.uniform(*self.ratio) * num_patches)
    return block_mask(rng, self.grid, num_masked, min_block=self.min_block)


@dataclasses.dataclass(frozen=True)
class MultiCrop(grain.transforms.RandomMap):
  """{'image', 'label'} -> DINO's crops (and iBOT's masks of the global crops).

  Output: 'global_crops' f32 [G, S, S, C] (G = len(global_augments)), 'local_crops'
  f32 [L, s, s, C] (L = num_local; [0, s, s, C] when there are none), 'label' int32 and,
  when `masking` is set, 'masks' f32 [G, N] (1 = masked patch of that global crop, N the
  global crop's patch count). All draws come from the example's generator in a fixed order
  (global crops, local crops, masks), so the output is a pure function of seed and position.
  """

  global_augments: tuple[augment_lib.SimCLRAugment, ...]
  local_augment: augment_lib.SimCLRAugment | None = None
  num_local: int = 0
  masking: BlockMasking | None = None

  def __post_init__(self):
    if not self.global_augments:
      raise ValueError("MultiCrop needs at least one global crop augmentation.")
    sizes = {a.output_size for a in self.global_augments}
    if len(sizes) != 1 or None in sizes:
      raise ValueError(f"global crops must share one explicit output_size, got {sizes}.")
    if self.num_local < 0 or (self.num_local and self.local_augment is None):
      raise ValueError(
        f"num_local={self.num_local} needs num_local >= 0 and a local_augment when > 0."
      )
    if self.num_local and self.local_augment.output_size is None:
      raise ValueError("local_augment needs an explicit output_size (the local crop size).")

  def random_map(self, element, rng: np.random.Generator):
    image = element["image"]
    global_crops = np.stack([aug(image, rng) for aug in self.global_augments])
    if self.num_local:
      local_crops = np.stack([self.local_augment(image, rng) for _ in range(self.num_local)])
    else:
      size = self.global_augments[0].output_size // 2
      local_crops = np.zeros((0, size, size, global_crops.shape[-1]), np.float32)
    out = {
      "global_crops": global_crops,
      "local_crops": local_crops,
      "label": np.int32(element["label"]),
    }
    if self.masking is not None:
      out["masks"] = np.stack([self.masking(rng) for _ in self.global_augments]).astype(np.float32)
    return out


def dino_multicrop(
  *,
  mean,
  std,
  global_size: int,
  local_size: int,
  num_local: int,
  global_scale=(0.4, 1.0),
  local_scale=(0.05, 0.4),
  flip_prob=0.5,
  jitter=augment_lib.simclr_jitter(0.5),
  jitter_prob=0.8,
  masking: BlockMasking | None = None,
  placement: str = "auto",
) -> MultiCrop:
  """DINO's `DataAugmentationDINO`: global 1 blur p=1.0, global 2 blur 0.1 + solarize 0.2,
  locals blur 0.5; all with flip, colour jitter (p=0.8) and grayscale (p=0.2)."""
  common = dict(
    mean=tuple(mean),
    std=tuple(std),
    flip_prob=flip_prob,
    jitter=tuple(jitter),
    jitter_prob=jitter_prob,
    placement=placement,
  )
  global_augments = tuple(
    augment_lib.SimCLRAugment(
      output_size=global_size,
      crop_scale=tuple(global_scale),
      blur_prob=blur,
      solarize_prob=solarize,
      **common,
    )
    for blur, solarize in ((1.0, 0.0), (0.1, 0.2))
  )
  local_augment = augment_lib.SimCLRAugment(
    output_size=local_size, crop_scale=tuple(local_scale), blur_prob=0.5, **common
  )
  return MultiCrop(global_augments, local_augment, num_local, masking)
