"""Per-example patch masks for masked image modelling, made in the data pipeline.

MAE (He et al. 2022, sec. 3, "Masking"; `random_masking` in the official `models_mae.py`)
removes a uniformly random subset of patches from every image: shuffle the N patch indices,
keep the first K = int(N * (1 - mask_ratio)) and mask the rest. The encoder sees only the kept
patches (`keep_indices`, in shuffled order); the decoder appends mask tokens and puts every
token back in its place with `ids_restore`, the inverse permutation.

Masks are drawn here, in NumPy from Grain's per-element generator, rather than inside the
jitted step: each example's mask is then a pure function of the seed and its global position,
so a restored data iterator replays exactly the same masks, and every example in a batch has
the same number K of kept patches (fixed shapes for XLA).
"""

import dataclasses

import grain
import numpy as np

from jaxssl.data import augment as augment_lib


def num_kept(num_patches: int, mask_ratio: float) -> int:
  """K = int(N * (1 - mask_ratio)), as the official MAE code rounds it (towards zero)."""
  return int(num_patches * (1 - mask_ratio))


def random_mask(
  rng: np.random.Generator, num_patches: int, mask_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """MAE's per-sample random masking of `num_patches` patch indices.

  MAE sorts uniform noise to get a random permutation `ids_shuffle`; a uniformly random
  permutation is drawn here directly, which has the same distribution.

  Args:
    rng: the example's generator.
    num_patches: N, patches in row-major order over the patch grid.
    mask_ratio: fraction of patches to remove, in [0, 1); at least one patch is kept.

  Returns:
    keep_indices: int32 [K], ids_shuffle[:K], the kept patches in the order the encoder sees.
    mask: float32 [N], 1 where the patch is removed (the loss is taken there), 0 where kept.
    ids_restore: int32 [N], argsort(ids_shuffle): position n of the (kept tokens ++ mask
      tokens) sequence that holds patch n, so `take(sequence, ids_restore)` unshuffles it.
  """
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(
      f"mask_ratio={mask_ratio} must be in [0, 1) (the fraction of patches removed; MAE uses 0.75)."
    )
  keep = num_kept(num_patches, mask_ratio)
  if keep < 1:
    raise ValueError(
      f"mask_ratio={mask_ratio} keeps no patch of {num_patches}; lower "
      "mask_ratio or use smaller patches."
    )
  ids_shuffle = rng.permutation(num_patches)
  ids_restore = np.argsort(ids_shuffle)
  # In shuffled order the first K are kept; `ids_restore` carries that back to patch order.
  mask = (ids_restore >= keep).astype(np.float32)
  return ids_shuffle[:keep].astype(np.int32), mask, ids_restore.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class MaskedView(grain.transforms.RandomMap):
  """{'image', 'label'} -> one augmented view and its MAE mask.

  Output: 'image' f32 [S, S, C] (S = image_size), 'keep_indices' int32 [K], 'mask' f32 [N],
  'ids_restore' int32 [N] (see `random_mask`; N = (S / patch_size)^2) and 'label' int32.
  The augmentation and the mask draw from the same per-element generator one after the other.
  MAE's augmentation is a random resized crop and a horizontal flip only (sec. A.1).
  """

  augment: augment_lib.SimCLRAugment
  patch_size: int
  mask_ratio: float
  image_size: int

  def __post_init__(self):
    if self.patch_size < 1 or self.image_size % self.patch_size:
      raise ValueError(
        f"image_size={self.image_size} must be a multiple of patch_size="
        f"{self.patch_size}; change one of them."
      )
    if self.augment.output_size not in (None, self.image_size):
      raise ValueError(
        f"The augmentation makes {self.augment.output_size}px images but "
        f"image_size={self.image_size}; give it output_size=image_size."
      )
    # Fails here, at pipeline construction, rather than inside a worker process.
    random_mask(np.random.default_rng(0), self.num_patches, self.mask_ratio)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def random_map(self, element, rng: np.random.Generator):
    image = self.augment(element["image"], rng)
    if image.shape[:2] != (self.image_size, self.image_size):
      raise ValueError(
        f"Augmented image is {image.shape[:2]}, expected "
        f"{(self.image_size, self.image_size)}; set the augmentation's "
        "output_size to image_size."
      )
    keep_indices, mask, ids_restore = random_mask(rng, self.num_patches, self.mask_ratio)
    return {
      "image": image,
      "keep_indices": keep_indices,
      "mask": mask,
      "ids_restore": ids_restore,
      "label": np.int32(element["label"]),
    }
