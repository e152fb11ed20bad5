"""MAE masks: exact keep count, mask/keep/restore consistency, per-element seeding in Grain."""

import grain
import numpy as np
import pytest

from jaxssl.data import augment
from jaxssl.data import masking
from jaxssl.data import pipeline


@pytest.mark.parametrize(
  "num_patches,mask_ratio,expected_keep",
  [(16, 0.75, 4), (196, 0.75, 49), (49, 0.75, 12), (10, 0.0, 10), (7, 0.5, 3)],
)
def test_random_mask_keeps_int_n_times_one_minus_ratio(num_patches, mask_ratio, expected_keep):
  keep, mask, ids_restore = masking.random_mask(np.random.default_rng(0), num_patches, mask_ratio)
  assert keep.shape == (expected_keep,) and keep.dtype == np.int32
  assert mask.shape == ids_restore.shape == (num_patches,)
  assert mask.dtype == np.float32 and ids_restore.dtype == np.int32
  assert len(set(keep.tolist())) == expected_keep  # no patch kept twice
  np.testing.assert_array_equal(mask[keep], 0.0)
  assert mask.sum() == num_patches - expected_keep
  assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


def test_ids_restore_inverts_the_shuffle():
  rng = np.random.default_rng(3)
  n = 16
  keep, mask, ids_restore = masking.random_mask(rng, n, 0.75)
  np.testing.assert_array_equal(np.sort(ids_restore), np.arange(n))  # a permutation
  # The decoder's sequence is (kept tokens ++ mask tokens); gathering it with ids_restore
  # must put patch n's kept token at position n and a mask token at every removed patch.
  kept_tokens = 100 + keep  # a token that names the patch it came from
  sequence = np.concatenate([kept_tokens, np.full(n - len(keep), -1)])
  restored = sequence[ids_restore]
  np.testing.assert_array_equal(restored[keep], 100 + keep)
  np.testing.assert_array_equal(restored == -1, mask == 1.0)


def test_random_mask_is_deterministic_and_varies_with_the_generator():
  first = masking.random_mask(np.random.default_rng(7), 49, 0.75)
  again = masking.random_mask(np.random.default_rng(7), 49, 0.75)
  other = masking.random_mask(np.random.default_rng(8), 49, 0.75)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[1], other[1])


def test_random_mask_is_uniform_over_patches():
  # Every patch is removed with probability mask_ratio (MAE's uniform random sampling).
  rng = np.random.default_rng(0)
  masks = np.stack([masking.random_mask(rng, 8, 0.75)[1] for _ in range(4000)])
  np.testing.assert_allclose(masks.mean(0), 0.75, atol=0.03)


@pytest.mark.parametrize("mask_ratio", [1.0, -0.1, 0.99])
def test_random_mask_rejects_bad_ratios(mask_ratio):
  with pytest.raises(ValueError, match="mask_ratio"):
    masking.random_mask(np.random.default_rng(0), 16, mask_ratio)


def _augment(output_size=8):
  return augment.SimCLRAugment(
    mean=(0.5,),
    std=(0.25,),
    output_size=output_size,
    crop_scale=(0.2, 1.0),
    flip_prob=0.5,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  )


def _source(n=12):
  rng = np.random.default_rng(0)
  return [
    {"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "label": i % 3} for i in range(n)
  ]


def test_masked_view_outputs_and_per_element_seeding():
  view = masking.MaskedView(_augment(), patch_size=2, mask_ratio=0.75, image_size=8)
  ds = grain.MapDataset.source(_source()).seed(5).random_map(view)
  a, a_again, b = ds[0], ds[0], ds[1]
  assert a["image"].shape == (8, 8, 1) and a["image"].dtype == np.float32
  assert a["keep_indices"].shape == (4,) and a["mask"].shape == a["ids_restore"].shape == (16,)
  assert a["label"].dtype == np.int32
  np.testing.assert_array_equal(a["mask"][a["keep_indices"]], 0.0)
  for key in a:  # same element, same seed: identical image and mask
    np.testing.assert_array_equal(a[key], a_again[key])
  masks = np.stack([ds[i]["mask"] for i in range(len(ds))])
  assert len({m.tobytes() for m in masks}) > len(ds) // 2  # elements get their own masks
  assert not np.array_equal(a["mask"], b["mask"])


def test_masked_view_batches_replay_exactly_after_restore():
  view = masking.MaskedView(_augment(), patch_size=2, mask_ratio=0.75, image_size=8)
  dataset = pipeline.make_train_dataset(
    _source(), view, global_batch_size=4, seed=1, process_index=0, process_count=1
  )
  it = pipeline.make_train_iterator(dataset)
  next(it)
  state = it.get_state()
  expected = next(it)
  assert expected["keep_indices"].shape == (4, 4)
  restored = pipeline.make_train_iterator(dataset)
  restored.set_state(state)
  replay = next(restored)
  for key in expected:
    np.testing.assert_array_equal(replay[key], expected[key])


def test_masked_view_rejects_mismatched_sizes():
  with pytest.raises(ValueError, match="multiple of patch_size"):
    masking.MaskedView(_augment(), patch_size=3, mask_ratio=0.75, image_size=8)
  with pytest.raises(ValueError, match="output_size"):
    masking.MaskedView(_augment(output_size=16), patch_size=2, mask_ratio=0.75, image_size=8)
  with pytest.raises(ValueError, match="keeps no patch"):
    masking.MaskedView(_augment(), patch_size=8, mask_ratio=0.5, image_size=8)
