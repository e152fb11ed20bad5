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
