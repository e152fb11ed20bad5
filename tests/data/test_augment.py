"""Tests for jaxssl.data.augment: bounds, exact identities, float64 references, determinism."""

import pickle

import numpy as np
import pytest
from scipy import ndimage

from jaxssl.data import augment

MEAN, STD = (0.25,), (0.5,)


def _identity_augment(**overrides):
  """An augmentation whose every random step is switched off (a full-image crop)."""
  config = dict(
    mean=MEAN,
    std=STD,
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
  )
  return augment.SimCLRAugment(**{**config, **overrides})


def _image(rng, shape=(12, 12, 1)):
  return rng.integers(0, 256, shape).astype(np.uint8)


def test_crop_box_respects_bounds():
  rng = np.random.default_rng(0)
  height, width = 600, 800  # Large, so rounding to whole pixels barely moves area and ratio.
  scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
  for _ in range(500):
    top, left, h, w = augment.sample_crop_box(rng, height, width, scale, ratio)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    assert scale[0] * 0.99 <= h * w / (height * width) <= scale[1]
    assert ratio[0] * 0.99 <= w / h <= ratio[1] * 1.01


def test_crop_box_area_is_uniform_in_scale():
  # With scale (0.1, 0.5) every sample fits a square image, so the area fraction is U[0.1, 0.5].
  rng = np.random.default_rng(1)
  fractions = np.array(
    [np.prod(augment.sample_crop_box(rng, 500, 500, (0.1, 0.5))[2:]) / 500**2 for _ in range(4000)]
  )
  assert abs(fractions.mean() - 0.3) < 0.01
  assert abs(fractions.var() - 0.4**2 / 12) < 0.002
  # Positions are uniform: small crops reach both borders.
  tops = [augment.sample_crop_box(rng, 50, 50, (0.05, 0.05))[0] for _ in range(500)]
  assert min(tops) == 0 and max(tops) >= 38


def test_crop_box_falls_back_to_central_crop():
  # A 10x100 strip cannot hold a square of 90% of its area: central square crop.
  rng = np.random.default_rng(2)
  assert augment.sample_crop_box(rng, 10, 100, (0.9, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)


def test_resized_crop_without_resizing_is_a_slice():
  image = _image(np.random.default_rng(3), (10, 14, 3))
  box = (2, 3, 5, 7)
  np.testing.assert_array_equal(augment.resized_crop(image, box, (5, 7)), image[2:7, 3:10])
  out = augment.resized_crop(image, box, (20, 9))
  assert out.shape == (20, 9, 3) and out.dtype == np.uint8
  constant = np.full((10, 14, 1), 77, np.uint8)
  np.testing.assert_array_equal(augment.resized_crop(constant, box, (20, 9)), 77)


def test_gaussian_blur_matches_scipy():
  x = np.random.default_rng(4).random((9, 11, 2)).astype(np.float32)
  for sigma, radius in ((0.7, 1), (1.5, 3)):
    expected = ndimage.gaussian_filter(
      x.astype(np.float64), sigma, mode="reflect", radius=radius, axes=(0, 1)
    )
    np.testing.assert_allclose(augment.gaussian_blur(x, sigma, radius), expected, atol=1e-6)
  np.testing.assert_array_equal(augment.gaussian_blur(x, 1.0, 0), x)


def test_color_adjustments():
  rng = np.random.default_rng(5)
  x = (0.3 + 0.4 * rng.random((6, 6, 3))).astype(np.float32)  # Mid-range: nothing clips.
  luma = x.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])
  np.testing.assert_allclose(augment.adjust_brightness(x, 1.5), np.clip(x * 1.5, 0, 1))
  contrast = augment.adjust_contrast(x, 0.5).astype(np.float64)
  np.testing.assert_allclose(contrast, (x - luma.mean()) * 0.5 + luma.mean(), atol=1e-6)
  gray = augment.adjust_saturation(x, 0.0)
  np.testing.assert_allclose(gray, np.repeat(luma[..., None], 3, -1), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_hue(x, 1.0), x, atol=1e-5)  # A full turn.
  shifted = augment.adjust_hue(x, 0.1).astype(np.float64)
  np.testing.assert_allclose(
    shifted @ [0.299, 0.587, 0.114], x @ [0.299, 0.587, 0.114], atol=1e-5
  )  # Hue rotation keeps the YIQ luma.
  assert np.abs(shifted - x).max() > 0.01
  # One channel: saturation and hue are identities; jitter stays in [0, 1].
  g = x[..., :1]
  np.testing.assert_array_equal(augment.adjust_saturation(g, 0.0), g)
  np.testing.assert_array_equal(augment.adjust_hue(g, 0.3), g)
  jittered = augment.color_jitter(g, rng, augment.simclr_jitter(1.0))
  assert jittered.min() >= 0 and jittered.max() <= 1 and not np.allclose(jittered, g)
  np.testing.assert_allclose(augment.add_brightness(x, 0.25), np.clip(x + 0.25, 0, 1))


@pytest.mark.parametrize("mode", ["scale", "add"])
def test_color_jitter_brightness_follows_its_mode(mode):
  """A uniform grey image under brightness-only jitter (0.4, 0, 0, 0): torchvision/SimCLR scale
  it by f ~ U[0.6, 1.4] (values in [0.3, 0.7] for 0.5), BYOL adds d ~ U[-0.4, 0.4] (values in
  [0.1, 0.9]), both with mean 0.5; black stays black only under the factor."""
  rng = np.random.default_rng(0)
  grey = np.full((2, 2, 3), 0.5, np.float32)
  values = np.array(
    [augment.color_jitter(grey, rng, (0.4, 0, 0, 0), mode)[0, 0, 0] for _ in range(4000)]
  )
  lo, hi = (0.3, 0.7) if mode == "scale" else (0.1, 0.9)
  assert lo <= values.min() < lo + 0.01 and hi - 0.01 < values.max() <= hi
  assert abs(values.mean() - 0.5) < 0.01
  black = [augment.color_jitter(np.zeros_like(grey), rng, (0.4, 0, 0, 0), mode) for _ in range(20)]
  assert (max(b.max() for b in black) == 0.0) == (mode == "scale")


def test_solarize_and_normalize():
  x = np.array([0.0, 0.2, 0.49, 0.5, 0.8, 1.0], np.float32).reshape(1, 6, 1)
  np.testing.assert_allclose(
    augment.solarize(x).ravel(), [0.0, 0.2, 0.49, 0.5, 0.2, 0.0], atol=1e-7
  )
  y = np.random.default_rng(6).random((3, 3, 2))
  out = augment.normalize(y, (0.1, 0.2), (0.3, 0.4))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, (y - [0.1, 0.2]) / [0.3, 0.4], rtol=1e-6)


def test_identity_settings_only_normalize():
  image = _image(np.random.default_rng(7))
  out = _identity_augment()(image, np.random.default_rng(0))
  np.testing.assert_allclose(out, (image / 255.0 - MEAN[0]) / STD[0], rtol=1e-6, atol=1e-6)
  flipped = _identity_augment(flip_prob=1.0)(image, np.random.default_rng(0))
  np.testing.assert_allclose(flipped, out[:, ::-1], atol=1e-6)
  solarized = _identity_augment(solarize_prob=1.0)(image, np.random.default_rng(0))
  x = image / 255.0
  np.testing.assert_allclose(solarized, (np.where(x < 0.5, x, 1 - x) - 0.25) / 0.5, atol=1e-6)


def test_simclr_augment_is_seeded_and_shaped():
  image = _image(np.random.default_rng(8), (28, 28, 1))
  aug = augment.SimCLRAugment(MEAN, STD, jitter=augment.simclr_jitter(1.0))
  a = aug(image, np.random.default_rng(42))
  np.testing.assert_array_equal(a, aug(image, np.random.default_rng(42)))
  assert not np.allclose(a, aug(image, np.random.default_rng(43)))
  assert a.shape == (28, 28, 1) and a.dtype == np.float32
  small = augment.SimCLRAugment(MEAN, STD, output_size=16)(image[..., 0], np.random.default_rng(0))
  assert small.shape == (16, 16, 1)
  rgb = augment.SimCLRAugment((0.5,) * 3, (0.25,) * 3, grayscale_prob=1.0, blur_prob=1.0)
  out = rgb(_image(np.random.default_rng(9), (20, 20, 3)), np.random.default_rng(0))
  assert out.shape == (20, 20, 3)
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)  # Grayscale applied.


def test_two_views_are_independent_views_of_one_example():
  element = {"image": _image(np.random.default_rng(10), (28, 28, 1)), "label": 7}
  views = augment.TwoViews(augment.SimCLRAugment(MEAN, STD))
  out = views.random_map(element, np.random.default_rng(0))
  assert set(out) == {"view1", "view2", "label"}
  assert out["label"].dtype == np.int32 and out["label"] == 7
  assert out["view1"].shape == out["view2"].shape == (28, 28, 1)
  assert not np.allclose(out["view1"], out["view2"])
  again = views.random_map(element, np.random.default_rng(0))
  np.testing.assert_array_equal(out["view1"], again["view1"])
  np.testing.assert_array_equal(out["view2"], again["view2"])
  # Asymmetric views (BYOL): the second augmentation is used for view2.
  asym = augment.TwoViews(_identity_augment(), _identity_augment(solarize_prob=1.0))
  out = asym.random_map(element, np.random.default_rng(0))
  x = element["image"] / 255.0
  np.testing.assert_allclose(out["view1"], (x - 0.25) / 0.5, atol=1e-6)
  np.testing.assert_allclose(out["view2"], (np.where(x < 0.5, x, 1 - x) - 0.25) / 0.5, atol=1e-6)
  # Worker processes receive transforms by pickle.
  restored = pickle.loads(pickle.dumps(views))
  np.testing.assert_array_equal(
    restored.random_map(element, np.random.default_rng(0))["view1"],
    views.random_map(element, np.random.default_rng(0))["view1"],
  )


def test_deterministic_transform():
  element = {"image": _image(np.random.default_rng(11), (16, 16, 1)), "label": np.int64(3)}
  out = augment.Deterministic(MEAN, STD).map(element)
  np.testing.assert_allclose(out["image"], (element["image"] / 255.0 - 0.25) / 0.5, atol=1e-6)
  assert out["label"].dtype == np.int32 and out["image"].dtype == np.float32
  cropped = augment.Deterministic(MEAN, STD, output_size=8, crop_fraction=0.5).map(element)
  expected = (element["image"][4:12, 4:12] / 255.0 - 0.25) / 0.5
  np.testing.assert_allclose(cropped["image"], expected, atol=1e-6)
  assert augment.Deterministic(MEAN, STD, output_size=32).map(element)["image"].shape == (32, 32, 1)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.8, 0.5)), "crop_scale"),
    (dict(crop_ratio=(2.0, 1.0)), "crop_ratio"),
    (dict(blur_prob=1.5), "blur_prob"),
    (dict(output_size=0), "output_size"),
    (dict(std=(0.0,)), "std"),
    (dict(jitter=(0.4, 0.4, 0.4)), "jitter"),
    (dict(jitter=(0.4, 0.4, 0.4, 0.6)), "jitter"),
    (dict(brightness_mode="multiply"), "brightness_mode"),
  ],
)
def test_bad_config_raises(kwargs, message):
  with pytest.raises(ValueError, match=message):
    augment.SimCLRAugment(**{"mean": MEAN, "std": STD, **kwargs})


def test_bad_input_raises():
  aug = augment.SimCLRAugment(MEAN, STD)
  with pytest.raises(ValueError, match="channels"):
    aug(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(0))
  with pytest.raises(ValueError, match="uint8"):
    aug(np.zeros((8, 8, 1), np.float32), np.random.default_rng(0))
  with pytest.raises(ValueError, match="crop_fraction"):
    augment.Deterministic(MEAN, STD, crop_fraction=0.0)
