"""The device half of the view augmentations against the host code (jaxssl.data.augment):
each op on the same parameters, the composed recipe, the parameter and output statistics over
many draws, placement, sharding invariance, and the train step with placement='device'."""

import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compiles
from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import parallel
from jaxssl import train as train_lib
from jaxssl.data import augment
from jaxssl.data import device_augment as dev
from jaxssl.data import multicrop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _image(seed, shape=(16, 16, 3)):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(
  "name,host,device,value",
  [
    ("brightness", augment.adjust_brightness, dev.adjust_brightness, 1.37),
    ("contrast", augment.adjust_contrast, dev.adjust_contrast, 0.45),
    ("saturation", augment.adjust_saturation, dev.adjust_saturation, 1.6),
    ("hue", augment.adjust_hue, dev.adjust_hue, -0.13),
    ("solarize", augment.solarize, dev.solarize, 0.5),
  ],
)
def test_each_op_matches_the_host_op(name, host, device, value, channels):
  x = _image(channels, (16, 16, channels))
  np.testing.assert_allclose(device(jnp.asarray(x), value), host(x, value), atol=2e-6)


@pytest.mark.parametrize("sigma,radius", [(0.3, 1), (1.7, 3), (2.0, 0)])
def test_blur_and_grayscale_match_the_host(sigma, radius):
  x = _image(7)
  np.testing.assert_allclose(
    dev.gaussian_blur(jnp.asarray(x), sigma, radius),
    augment.gaussian_blur(x, sigma, radius),
    atol=2e-6,
  )
  np.testing.assert_allclose(dev.grayscale(jnp.asarray(x)), x @ augment._LUMA[:, None], atol=1e-6)  # pylint: disable=protected-access


def _host_recipe(crop_uint8, p, recipe):
  """augment.SimCLRAugment's steps after the crop, with the parameters `p` (NumPy)."""
  x = crop_uint8.astype(np.float32) / 255.0
  if p["flip"]:
    x = x[:, ::-1]
  if p["jitter"]:
    brighten = (
      augment.add_brightness if recipe.brightness_mode == "add" else augment.adjust_brightness
    )
    ops = (
      lambda y: brighten(y, p["brightness"]),
      lambda y: augment.adjust_contrast(y, p["contrast"]),
      lambda y: augment.adjust_saturation(y, p["saturation"]),
      lambda y: augment.adjust_hue(y, p["hue"]),
    )
    for index in p["order"]:
      x = ops[index](x)
  if p["grayscale"]:
    x = np.repeat(x @ augment._LUMA[:, None], 3, axis=-1)  # pylint: disable=protected-access
  if p["blur"]:
    x = augment.gaussian_blur(x, p["sigma"], int(x.shape[0] * recipe.blur_kernel_fraction) // 2)
  if p["solarize"]:
    x = augment.solarize(x)
  return augment.normalize(x, recipe.mean, recipe.std)


@pytest.mark.parametrize(
  "jitter,brightness_mode",
  [(augment.simclr_jitter(1.0), "scale"), ((0.4, 0.4, 0.2, 0.1), "add")],
)
def test_the_composed_recipe_matches_the_host_on_the_same_parameters(jitter, brightness_mode):
  recipe = augment.SimCLRAugment(
    MEAN, STD, jitter=jitter, brightness_mode=brightness_mode, solarize_prob=0.5
  ).photometric()
  crops = (np.random.default_rng(0).uniform(0, 255, (12, 20, 20, 3))).astype(np.uint8)
  params = jax.device_get(recipe.sample(jax.random.key(3), 12))
  # Every branch both ways across the 12 examples.
  for flag in ("flip", "jitter", "grayscale", "blur", "solarize"):
    params[flag] = np.arange(12) % 2 == (hash(flag) % 2)
  got = jax.vmap(recipe.apply_one)(jnp.asarray(crops), params)
  for i in range(12):
    want = _host_recipe(crops[i], {k: v[i] for k, v in params.items()}, recipe)
    np.testing.assert_allclose(got[i], want, atol=3e-5, err_msg=f"example {i}")


@pytest.mark.parametrize(
  "jitter,brightness_mode",
  [(augment.simclr_jitter(0.5), "scale"), ((0.3, 0.6, 0.2, 0.05), "add")],
)
def test_parameters_follow_the_host_distributions(jitter, brightness_mode):
  n = 20_000
  recipe = augment.SimCLRAugment(
    MEAN, STD, jitter=jitter, brightness_mode=brightness_mode, blur_prob=0.3, solarize_prob=0.2
  ).photometric()
  p = jax.device_get(recipe.sample(jax.random.key(0), n))
  tol = 4 * np.sqrt(0.25 / n)
  for flag, rate in [
    ("flip", 0.5),
    ("jitter", 0.8),
    ("grayscale", 0.2),
    ("blur", 0.3),
    ("solarize", 0.2),
  ]:
    assert abs(p[flag].mean() - rate) < tol, flag
  centre = {"brightness": 0.0 if brightness_mode == "add" else 1.0}
  for name, v in zip(("brightness", "contrast", "saturation", "hue"), jitter):
    mid = centre.get(name, 0.0 if name == "hue" else 1.0)
    lo, hi = mid - v, mid + v
    assert lo <= p[name].min() < lo + 0.01 and hi - 0.01 < p[name].max() <= hi, name
    assert abs(p[name].mean() - mid) < 0.01, name
  assert 0.1 <= p["sigma"].min() and p["sigma"].max() <= 2.0
  orders = {tuple(o) for o in p["order"]}
  assert orders == set(itertools.permutations(range(4)))  # all 24 orders occur
  counts = np.unique(p["order"][:, 0], return_counts=True)[1]
  assert np.all(np.abs(counts / n - 0.25) < tol)


def _host_views(aug, image, n):
  rng = np.random.default_rng(0)
  return np.stack([aug(image, rng) for _ in range(n)])


def _device_views(aug, image, n):
  crops = np.broadcast_to(image, (n,) + image.shape)
  return np.asarray(aug.photometric()(jnp.asarray(crops), jax.random.key(1)))


@pytest.mark.parametrize(
  "name,fields,image,statistic",
  [
    # A left-dark / right-bright image: flipped iff its left half is the brighter.
    (
      "flip",
      dict(flip_prob=0.5),
      np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1)),
      lambda v: (v[:, :, :4].mean((1, 2, 3)) > v[:, :, 4:].mean((1, 2, 3))).astype(float),
    ),
    # A uniform grey image: only brightness changes it, so its value is the factor x 0.5.
    (
      "brightness",
      dict(jitter_prob=1.0, jitter=augment.simclr_jitter(0.5)),
      np.full((8, 8), 128, np.uint8),
      lambda v: v.mean((1, 2, 3)),
    ),
    # The same image under BYOL's additive brightness: its value is 0.5 + the shift.
    (
      "additive brightness",
      dict(jitter_prob=1.0, jitter=(0.4, 0.0, 0.0, 0.0), brightness_mode="add"),
      np.full((8, 8), 128, np.uint8),
      lambda v: v.mean((1, 2, 3)),
    ),
    # A uniform coloured image: grayscale makes its channels equal.
    (
      "grayscale",
      dict(grayscale_prob=0.2),
      np.full((8, 8, 3), (100, 200, 0), np.uint8),
      lambda v: (np.ptp(v[:, 0, 0], axis=-1) < 1e-6).astype(float),
    ),
    # A uniform bright image: solarize maps 0.8 to 0.2.
    (
      "solarize",
      dict(solarize_prob=0.2),
      np.full((8, 8), 204, np.uint8),
      lambda v: (v.mean((1, 2, 3)) < 0.5).astype(float),
    ),
    # A checkerboard: blur lowers its spread.
    (
      "blur",
      dict(blur_prob=0.5, blur_kernel_fraction=0.5),
      (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8),
      lambda v: (v.std((1, 2, 3)) < 0.45).astype(float),
    ),
  ],
)
def test_output_statistics_match_the_host_over_many_draws(name, fields, image, statistic):
  image = np.asarray(image, np.uint8)
  image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
  off = dict(flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  aug = augment.SimCLRAugment(
    mean=(0.0,) * 3,
    std=(1.0,) * 3,
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    **{**off, **fields},
  )
  n = 3000
  host = statistic(_host_views(aug, image, n))
  device = statistic(_device_views(aug, image, n))
  assert abs(host.mean() - device.mean()) < 4 * max(host.std(), 1e-3) / np.sqrt(n), name
  assert abs(host.std() - device.std()) < 0.1 * host.std() + 1e-6, name
  assert host.min() == pytest.approx(device.min(), abs=0.02)
  assert host.max() == pytest.approx(device.max(), abs=0.02)


def test_device_placement_crops_on_the_host_as_uint8():
  aug = augment.SimCLRAugment(MEAN, STD, output_size=8, placement="device")
  image = (np.random.default_rng(0).uniform(0, 255, (12, 12, 3))).astype(np.uint8)
  crop = aug(image, np.random.default_rng(1))
  assert crop.dtype == np.uint8 and crop.shape == (8, 8, 3)
  host = dataclasses.replace(
    aug, placement="host", flip_prob=0, jitter_prob=0, grayscale_prob=0, blur_prob=0
  )
  np.testing.assert_allclose(  # the same crop the host path would have augmented
    host(image, np.random.default_rng(1)), augment.normalize(crop / 255.0, MEAN, STD), atol=1e-6
  )
  with pytest.raises(ValueError, match="placement"):
    augment.SimCLRAugment(MEAN, STD, placement="gpu")


def test_place_resolves_auto_per_platform():
  two = augment.TwoViews(augment.SimCLRAugment(MEAN, STD, output_size=8))
  placed, views = dev.place(two, "cpu")
  assert views is None and placed.augment1.placement == "host"
  placed, views = dev.place(two, "tpu")
  assert placed.augment1.placement == placed.augment2.placement == "device"
  assert [k for k, _ in views.views] == ["view1", "view2"]
  crops = multicrop.dino_multicrop(
    mean=MEAN, std=STD, global_size=8, local_size=4, num_local=3, placement="device"
  )
  _, views = dev.place(crops, "cpu")  # explicit 'device' holds on any platform
  recipes = dict(views.views)
  assert [r.blur_prob for r in recipes["global_crops"]] == [1.0, 0.1]
  assert len(recipes["local_crops"]) == 3
  other = object()  # any other transform: unchanged, nothing on the device
  assert dev.place(other, "tpu") == (other, None)


def _multicrop_batch(n=8):
  rng = np.random.default_rng(0)
  return {
    "global_crops": rng.integers(0, 256, (n, 2, 8, 8, 3), dtype=np.uint8),
    "local_crops": rng.integers(0, 256, (n, 3, 4, 4, 3), dtype=np.uint8),
    "masks": rng.integers(0, 2, (n, 2, 4)).astype(np.float32),
  }


def test_device_views_shapes_slots_and_sharding_invariance():
  crops = multicrop.dino_multicrop(
    mean=MEAN, std=STD, global_size=8, local_size=4, num_local=3, placement="device"
  )
  _, views = dev.place(crops, "cpu")
  batch = _multicrop_batch()
  spec = views.output_spec({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()})
  assert spec["global_crops"].dtype == jnp.float32 and spec["masks"].dtype == jnp.float32
  key = jax.random.key(5)
  one = jax.jit(views)(batch, key)
  assert one["global_crops"].shape == (8, 2, 8, 8, 3) and one["local_crops"].dtype == jnp.float32
  np.testing.assert_array_equal(one["masks"], batch["masks"])  # untouched
  # Each slot gets its own recipe: a solarizing one for slot 0, a plain one for the rest.
  off = dict(flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  plain = augment.SimCLRAugment(MEAN, STD, **off).photometric()
  solar = dataclasses.replace(plain, solarize_prob=1.0)
  fixed = dev.DeviceViews((("global_crops", (solar, plain)), ("local_crops", (plain,) * 3)))
  out = fixed(batch, key)
  x = batch["global_crops"] / 255.0
  np.testing.assert_allclose(
    out["global_crops"][:, 0], augment.normalize(augment.solarize(x[:, 0]), MEAN, STD), atol=1e-6
  )
  np.testing.assert_allclose(
    out["global_crops"][:, 1], augment.normalize(x[:, 1], MEAN, STD), atol=1e-6
  )
  np.testing.assert_allclose(
    out["local_crops"], augment.normalize(batch["local_crops"] / 255.0, MEAN, STD), atol=1e-6
  )
  mesh = parallel.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded = jax.device_put(batch, sharding)
  eight = jax.jit(views, out_shardings=sharding)(sharded, key)
  for k in batch:
    np.testing.assert_allclose(eight[k], one[k], atol=1e-6, err_msg=k)
  hlo = jax.jit(views).lower(sharded, key).compile().as_text()
  assert "all-gather" not in hlo and "all-to-all" not in hlo  # the ops shard with the batch


def _config(data_dir, placement, **overrides):
  c = config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:test"))
  c.data.data_dir = data_dir
  c.log_every_steps = 1
  c.mesh.fsdp = 2
  c.augment.placement = placement
  for k, v in overrides.items():
    c[k] = v
  return c


def test_train_with_device_placement_is_deterministic_and_resumes_exactly(tmp_path, data_dir):
  config = _config(data_dir, "device")
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  with compiles.step_compiles() as step_compiles:
    train_lib.train(config, straight)
  assert len(step_compiles) == 1  # uint8 crops in, augmentation inside: one compile
  train_lib.train(config, resumed, stop_at_step=3)
  train_lib.train(config, resumed)

  def losses(workdir):
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["train/loss"] for r in rows}

  a, b = losses(straight), losses(resumed)
  assert sorted(a) == list(range(1, 7))
  for step in range(1, 7):
    assert a[step] == pytest.approx(b[step], rel=1e-6), step
  spec = json.load(open(os.path.join(straight, "input_spec.json")))
  assert spec["view1"]["dtype"] == "float32"  # the eval job rebuilds from the method's view
  params = checkpoint.read_state_numpy(straight, 6)["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_placement_may_change_on_resume_and_older_records_resume(tmp_path, data_dir):
  from jaxssl import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path)
  host = _config(data_dir, "host")
  workdir_lib.record(workdir, host, {})
  changes = workdir_lib.check(workdir, _config(data_dir, "device"))
  assert changes == {"augment.placement": ("host", "device")}
  older = _config(data_dir, "host")  # a record from before the key existed
  with older.unlocked():
    del older.augment["placement"]
  workdir_lib.record(workdir, older, {})
  assert workdir_lib.check(workdir, _config(data_dir, "auto")) == {
    "augment.placement": ("<absent>", "auto")
  }
  with pytest.raises(Exception, match="augment.jitter"):  # the recipe itself may not
    workdir_lib.check(
      workdir,
      _config(
        data_dir,
        "auto",
        augment=dict(older.augment.to_dict(), jitter=(0.9, 0.9, 0.9, 0.2), placement="auto"),
      ),
    )
