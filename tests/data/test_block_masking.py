"""I-JEPA multi-block masks: disjoint context and targets, block sizes and aspects in the
paper's ranges, fixed counts, determinism given the seed, bad settings fail clearly."""

import numpy as np
import pytest

from jaxssl.data import augment
from jaxssl.data import block_masking as bm
from jaxssl.data import datasets

GRID = (7, 7)


def _masker(**kw):
  return bm.MultiBlockMasker(GRID, **{"target_patches": 6, "context_patches": 10, **kw})


def _blocks_of(rng_seed, masker):
  """Re-draws one example's blocks with the same generator calls, to check them whole."""
  rng = np.random.default_rng(rng_seed)
  return masker(rng)


def test_block_size_matches_the_official_rule():
  # keep = int(49 * 0.2) = 9; h = round(sqrt(9 * 1.5)) = 4, w = round(sqrt(9 / 1.5)) = 2.
  assert bm.block_size((7, 7), 0.2, 1.5) == (4, 2)
  # Context: keep = 49 -> 7 x 7, shrunk below the grid side to 6 x 6.
  assert bm.block_size((7, 7), 1.0, 1.0) == (6, 6)
  # 16x16 grid, scale 0.15: keep = 38; aspect 0.75 -> h = round(5.34) = 5, w = round(7.12) = 7.
  assert bm.block_size((16, 16), 0.15, 0.75) == (5, 7)


def test_targets_and_context_are_disjoint_with_fixed_counts():
  masker = _masker()
  rng = np.random.default_rng(0)
  for _ in range(300):
    context, targets = masker(rng)
    assert context.shape == (10,) and targets.shape == (4, 6)
    assert context.dtype == targets.dtype == np.int32
    assert len(set(context)) == 10  # no duplicates: every context token is a real patch
    assert all(len(set(t)) == 6 for t in targets)
    assert not set(context) & set(targets.reshape(-1))
    assert context.min() >= 0 and max(context.max(), targets.max()) < 49


def test_target_blocks_are_rectangles_in_the_papers_ranges(monkeypatch):
  """Records every placed block: targets h*w within int(N*[0.15, 0.2]) (up to rounding) and
  h/w within [0.75, 1.5] up to the rounding of the official rule; the 4 targets share a size;
  kept target patches lie inside their block; the context block is square, >= 36 of 49."""
  placed = []
  original = bm._place_block

  def recording(rng, grid, size):
    mask = original(rng, grid, size)
    placed.append((size, mask))
    return mask

  monkeypatch.setattr(bm, "_place_block", recording)
  masker = _masker()
  rng = np.random.default_rng(1)
  for _ in range(200):
    placed.clear()
    context, targets = masker(rng)
    (*tries,) = [placed[i : i + 5] for i in range(0, len(placed), 5)]
    blocks = tries[-1]  # the accepted draw
    sizes = {size for size, _ in blocks[:4]}
    assert len(sizes) == 1
    ((h, w),) = sizes
    n = 49
    # Area: round(sqrt(k a)) * round(sqrt(k / a)) with k = int(n s) lies within rounding of k.
    assert int(n * 0.15) - 3 <= h * w <= int(n * 0.2) + 3
    assert 0.75 / 2 <= h / w <= 1.5 * 2  # rounding on a 7x7 grid: 4x2 for a = 1.5
    for (size, mask), kept in zip(blocks[:4], targets):
      rows, cols = np.nonzero(mask)
      assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == size == (h, w)
      assert mask.reshape(-1)[kept].all()
    (ch, cw), cmask = blocks[4]
    assert ch == cw == 6
    assert set(context) <= set(np.flatnonzero(cmask)) or len(tries) == masker.max_tries


def test_aspect_ratio_range_on_a_large_grid():
  """On ImageNet's 16x16 grid, measured aspects h/w stay within the paper's (0.75, 1.5)
  up to the integer rounding of h and w (|error| <= 0.5 patch each)."""
  rng = np.random.default_rng(0)
  for _ in range(500):
    s, a = rng.uniform(0.15, 0.2), rng.uniform(0.75, 1.5)
    h, w = bm.block_size((16, 16), s, a)
    assert (h - 0.5) / (w + 0.5) <= 1.5 and (h + 0.5) / (w - 0.5) >= 0.75
    assert int(256 * 0.15) * 0.8 <= h * w <= int(256 * 0.2) * 1.2


def test_deterministic_given_the_seed_and_different_across_seeds():
  masker = _masker()
  a = [masker(np.random.default_rng(5)) for _ in range(2)]
  np.testing.assert_array_equal(a[0][0], a[1][0])
  np.testing.assert_array_equal(a[0][1], a[1][1])
  draws = {tuple(masker(np.random.default_rng(s))[0]) for s in range(20)}
  assert len(draws) > 10


def test_view_transform_on_a_real_image(data_dir):
  info = datasets.get_info("digits", data_dir)
  example = datasets.get_source("digits", "train", data_dir)[0]
  aug = augment.SimCLRAugment(
    mean=info.mean, std=info.std, output_size=8, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0
  )
  view = bm.MultiBlockView(aug, bm.MultiBlockMasker((4, 4), 1, 3), patch_size=2, image_size=8)
  out = view.random_map(example, np.random.default_rng(0))
  again = view.random_map(example, np.random.default_rng(0))
  assert out["image"].shape == (8, 8, 1) and out["context_indices"].shape == (3,)
  assert out["target_indices"].shape == (4, 1)
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])
  with pytest.raises(ValueError, match="masker grid"):
    bm.MultiBlockView(aug, bm.MultiBlockMasker((7, 7), 1, 3), patch_size=2, image_size=8)


def test_bad_settings_fail_clearly():
  with pytest.raises(ValueError, match="target_patches=7 must be in"):
    _masker(target_patches=7)  # the smallest block on 7x7 has 6 patches
  with pytest.raises(ValueError, match="context_patches=45 must be in"):
    _masker(context_patches=45)
  with pytest.raises(ValueError, match="target_scale"):
    _masker(target_scale=(0.3, 0.2))


class _RecordingRng:
  """A NumPy generator that records every `uniform(low, high)` call (iBOT's area draws)."""

  def __init__(self, seed):
    self._rng = np.random.default_rng(seed)
    self.uniform_calls = []

  def uniform(self, low, high):
    self.uniform_calls.append((low, high))
    return self._rng.uniform(low, high)

  def integers(self, *args):
    return self._rng.integers(*args)


def test_ibot_block_mask_never_exceeds_the_budget_and_is_blockwise():
  rng = np.random.default_rng(0)
  for target in (0, 1, 5, 30, 58, 98):
    for _ in range(20):
      mask = bm.block_mask(rng, (14, 14), target, min_block=16)
      assert mask.shape == (196,) and mask.dtype == bool
      assert mask.sum() <= target
  # The first block of a large budget is one rectangle, strictly smaller than the grid.
  mask = bm.block_mask(np.random.default_rng(1), (14, 14), 20, min_block=16).reshape(14, 14)
  rows, cols = np.nonzero(mask)
  assert 0 < np.ptp(rows) + 1 < 14 and 0 < np.ptp(cols) + 1 < 14


def test_ibot_area_draw_is_between_min_block_and_budget_either_way():
  """loader.py: `random.uniform(low, max_mask_patches)` with low = (min(H, W) // 3) ** 2 = 16,
  also when the remaining budget is below 16 (Python's uniform then returns a value in
  [budget, 16]); every area draw is U[min(16, budget), max(16, budget)]."""
  below = 0
  for seed in range(30):
    rng = _RecordingRng(seed)
    num_masked = int(0.3 * 196)
    mask = bm.block_mask(rng, (14, 14), num_masked, min_block=16)
    areas = rng.uniform_calls[::2]  # each attempt draws the area, then the log-aspect
    assert areas[0] == (16, num_masked)  # the first block: U[16, 58]
    for low, high in areas:
      assert low <= high and 16 in (low, high)
      below += high == 16  # a budget < 16: still drawn up to 16, not set to the budget
    assert mask.sum() <= num_masked
  assert below > 0


def test_ibot_policy_probability_and_ratio():
  policy = bm.BlockMasking(grid=(14, 14), ratio=(0.1, 0.5), prob=0.5, min_block=16)
  rng = np.random.default_rng(0)
  masks = np.stack([policy(rng) for _ in range(400)])
  ratios = masks.mean(-1)
  assert 160 <= np.sum(ratios > 0) <= 240  # probability 0.5 of 400, 4 std
  assert ratios.max() <= 0.5
  with pytest.raises(ValueError, match="min_block=0"):
    bm.BlockMasking(grid=(14, 14), min_block=0)
  with pytest.raises(ValueError, match="mask ratio range"):
    bm.BlockMasking(grid=(14, 14), ratio=(0.5, 0.1))
