"""CLIP method: loss from the tower outputs, learned and clipped temperature, one real run."""

import math

import jax
import numpy as np
import pytest

import harness
import image_text_harness as ith
from jaxssl import methods


@pytest.fixture(scope="module")
def setup():
  return ith.setup("clip")


def _clip_loss64(img, txt, scale):
  """CLIP fig. 3 in float64: symmetric CE over scale * cosine logits, labels on the diagonal."""
  logits = scale * ith.unit_rows(img) @ ith.unit_rows(txt).T

  def ce(lg):
    lg = lg - lg.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(lg).sum(axis=1)) - np.diagonal(lg))

  return 0.5 * (ce(logits) + ce(logits.T))


def test_text_is_cut_then_ended_then_padded():
  from jaxssl.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from jaxssl.methods import image_text  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.get_tokenizer("byte")
  out = image_text.encode_text(tok, "A frog.", 10)
  assert out.dtype == np.int32
  assert out.tolist() == list(b"A frog.") + [tok.eos_id] + [tok.pad_id] * 2
  long = image_text.encode_text(tok, "animals amphibians frog", 6)
  assert long.tolist() == list(b"anima") + [tok.eos_id]  # the end token is never cut off


def test_init_temperature_is_the_papers(setup):
  method, _, params, _ = setup
  assert "clip" in methods.available() and "image_text" not in methods.available()
  assert float(params["log_scale"]) == pytest.approx(math.log(1 / 0.07), rel=1e-6)
  assert params["log_scale"].shape == ()


def test_loss_is_clip_of_the_projected_tower_outputs(setup):
  method, batch, params, aux = setup
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  img, txt, scalars = ith.tower_outputs(method, params, batch)
  assert img.shape == txt.shape == (8, 16)
  np.testing.assert_allclose(
    float(loss), _clip_loss64(img, txt, math.exp(scalars["log_scale"])), rtol=1e-5
  )
  assert float(metrics["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
  assert {"img_to_txt_acc", "txt_to_img_acc", "rankme"} <= set(metrics)
  assert new_aux == aux


def test_scale_is_clipped_at_100_and_the_temperature_learns(setup):
  method, batch, params, aux = setup

  def loss_at(log_scale):
    p = {**params, "log_scale": log_scale}
    return method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0)[0]

  img, txt, _ = ith.tower_outputs(method, params, batch)
  # Above the clip: logits use exactly 100, and the temperature gets no gradient.
  np.testing.assert_allclose(
    float(loss_at(math.log(250.0))), _clip_loss64(img, txt, 100.0), rtol=1e-5
  )
  assert float(jax.grad(loss_at)(math.log(250.0))) == 0.0
  # Below it: the gradient is d loss / d log_scale, checked by central differences in float64.
  g = float(jax.grad(loss_at)(math.log(1 / 0.07)))
  h, s0 = 1e-3, math.log(1 / 0.07)
  numeric = (
    _clip_loss64(img, txt, math.exp(s0 + h)) - _clip_loss64(img, txt, math.exp(s0 - h))
  ) / (2 * h)
  assert g != 0.0
  np.testing.assert_allclose(g, numeric, rtol=1e-3)
  grads = ith.assert_every_parameter_gets_gradient(method, params, aux, batch)
  assert set(grads) == {"image_encoder", "text_encoder", "image_proj", "text_proj", "log_scale"}


def test_encode_is_the_image_tower(setup):
  ith.encode_is_the_image_tower(*setup)


@pytest.mark.slow
def test_train_transform_and_one_training_run_with_eval(tmp_path, data_dir):
  method = methods.build(harness.load_config("clip"))
  from jaxssl.data import datasets  # pylint: disable=g-import-not-at-top

  info = datasets.get_info("dejavu_glyphs")  # the test preset's data (pip only)
  example = datasets.get_source("dejavu_glyphs", "train", data_dir)[0]
  out = method.train_transform(info).random_map(example, np.random.default_rng(0))
  assert out["image"].shape == (8, 8, 3) and out["image"].dtype == np.float32
  np.testing.assert_array_equal(out["tokens"], method.tokenize(method.caption_text(example)))
  _, _, table, results = ith.train_and_evaluate("clip", str(tmp_path / "clip"), data_dir)
  for step in (0, 6):
    assert 0.0 <= results[(step, "zeroshot", "top1")] <= 1.0
    # 4 classes: letter, number, punctuation mark, symbol.
    assert results[(step, "zeroshot", "chance_uniform")] == pytest.approx(1 / 4)
    assert (
      0.0
      <= results[(step, "retrieval", "img_to_txt_top1")]
      <= results[(step, "retrieval", "img_to_txt_top5")]
      <= 1.0
    )
    assert (step, "knn", "top1") in results
    assert 0.0 <= results[(step, "fewshot", "5shot_top1")] <= 1.0
  assert "zeroshot top1" in table and "retrieval img_to_txt_top1" in table
