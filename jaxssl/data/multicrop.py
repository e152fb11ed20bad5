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

import grain
import numpy as np

from jaxssl.data import augment as augment_lib
from jaxssl.data.block_masking import BlockMasking, block_mask  # noqa: F401 (re-exported)


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
