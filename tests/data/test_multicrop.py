"""Multi-crop views and iBOT block masks: shapes, DINO's per-crop augmentations, determinism
given the seed, mask ratios, block structure and errors."""

import numpy as np
import pytest

from jaxssl.data import multicrop

MEAN, STD = (0.5,), (0.25,)


def _image(seed=0, size=28):
  return np.random.default_rng(seed).integers(0, 256, (size, size, 1), dtype=np.uint8)


def _transform(masking=None, num_local=4):
  return multicrop.dino_multicrop(
    mean=MEAN, std=STD, global_size=28, local_size=14, num_local=num_local, masking=masking
  )


def test_dino_augmentations_per_crop():
  t = _transform()
  (g1, g2), local = t.global_augments, t.local_augment
  assert (g1.blur_prob, g1.solarize_prob) == (1.0, 0.0)
  assert (g2.blur_prob, g2.solarize_prob) == (0.1, 0.2)
  assert (local.blur_prob, local.solarize_prob) == (0.5, 0.0)
  assert g1.crop_scale == g2.crop_scale == (0.4, 1.0) and local.crop_scale == (0.05, 0.4)
  assert (g1.output_size, local.output_size) == (28, 14)


def test_shapes_and_determinism_given_the_seed():
  t = _transform(multicrop.BlockMasking(grid=(4, 4), prob=1.0, min_block=1))
  element = {"image": _image(), "label": 3}
  out = t.random_map(element, np.random.default_rng(7))
  assert out["global_crops"].shape == (2, 28, 28, 1) and out["global_crops"].dtype == np.float32
  assert out["local_crops"].shape == (4, 14, 14, 1) and out["local_crops"].dtype == np.float32
  assert out["masks"].shape == (2, 16) and out["masks"].dtype == np.float32
  assert out["label"] == 3
  again = t.random_map(element, np.random.default_rng(7))
  for key in out:
    np.testing.assert_array_equal(out[key], again[key])
  other = t.random_map(element, np.random.default_rng(8))
  assert not np.array_equal(out["global_crops"], other["global_crops"])
  # The crops are different samples of the image, not copies.
  assert not np.array_equal(out["global_crops"][0], out["global_crops"][1])
  assert not np.array_equal(out["local_crops"][0], out["local_crops"][1])
  assert "masks" not in _transform().random_map(element, np.random.default_rng(7))


def _fraction_with_masked_neighbour(mask2d):
  """Share of masked patches with a masked 4-neighbour."""
  padded = np.pad(mask2d, 1)
  neighbour = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
  return (neighbour & mask2d).sum() / max(mask2d.sum(), 1)


def test_block_mask_never_exceeds_the_target_and_is_blockwise():
  rng = np.random.default_rng(0)
  exact, clustered = 0, []
  for _ in range(200):
    target = int(rng.integers(20, 99))
    mask = multicrop.block_mask(rng, (14, 14), target)
    assert mask.shape == (196,) and mask.dtype == bool
    assert mask.sum() <= target
    exact += mask.sum() == target
    clustered.append(_fraction_with_masked_neighbour(mask.reshape(14, 14)))
  assert exact >= 150  # BEiT's generator almost always reaches the target on a 14x14 grid
  # Blocks: nearly every masked patch touches another (only a last 1-patch block may not);
  # i.i.d. masking at these densities (10-50%) would give 35-95%.
  assert np.mean(clustered) >= 0.97


def test_mask_policy_probability_and_ratio_range():
  policy = multicrop.BlockMasking(grid=(14, 14), ratio=(0.1, 0.5), prob=0.5)
  rng = np.random.default_rng(1)
  ratios = np.array([policy(rng).mean() for _ in range(400)])
  masked = ratios > 0
  # Binomial(400, 0.5): 200 +- 10 std; 4.5 std bounds.
  assert 155 <= masked.sum() <= 245
  assert ratios.max() <= 0.5
  assert np.quantile(ratios[masked], 0.1) >= 0.09  # the low end is int(0.1 * 196) = 19
  assert 0.25 <= ratios[masked].mean() <= 0.33  # E[U(0.1, 0.5)] = 0.3, minus BEiT underfill
  np.testing.assert_array_equal(
    multicrop.BlockMasking(grid=(4, 4), prob=0.0)(np.random.default_rng(0)), False
  )


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(grid=(4, 4), ratio=(0.5, 0.1)), "ratio range"),
    (dict(grid=(4, 4), ratio=(0.1, 1.0)), "ratio range"),
    (dict(grid=(4, 4), prob=1.5), "probability"),
    (dict(grid=(1, 4)), "too small"),
  ],
)
def test_bad_mask_policy_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    multicrop.BlockMasking(**kwargs)


def test_bad_multicrop_raises():
  t = _transform()
  with pytest.raises(ValueError, match="local_augment"):
    multicrop.MultiCrop(t.global_augments, None, num_local=2)
  with pytest.raises(ValueError, match="at least one global"):
    multicrop.MultiCrop((), t.local_augment, num_local=2)
  no_locals = multicrop.MultiCrop(t.global_augments).random_map(
    {"image": _image(), "label": 0}, np.random.default_rng(0)
  )
  assert no_locals["local_crops"].shape == (0, 14, 14, 1)
