"""SigLIP method: pairwise sigmoid loss from the tower outputs, paper init, one real run."""

import math

import jax
import numpy as np
import pytest

import image_text_harness as ith
from jaxssl import methods


@pytest.fixture(scope="module")
def setup():
  return ith.setup("siglip")


def _siglip_loss64(img, txt, t, b):
  """Zhai et al. 2023 eq. 1 pair by pair in float64: -1/N sum_ij log sigmoid(z_ij (t x.y + b))."""
  x, y = ith.unit_rows(img), ith.unit_rows(txt)
  n = len(x)
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      total += math.log1p(math.exp(-z * (t * float(x[i] @ y[j]) + b)))
  return total / n


def test_init_is_the_papers(setup):
  _, _, params, _ = setup
  assert "siglip" in methods.available()
  assert float(params["t_prime"]) == pytest.approx(math.log(10.0), rel=1e-6)
  assert float(params["bias"]) == -10.0


def test_loss_is_the_pairwise_sigmoid_of_the_tower_outputs(setup):
  method, batch, params, aux = setup
  loss, (metrics, _) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  img, txt, scalars = ith.tower_outputs(method, params, batch)
  t, b = math.exp(scalars["t_prime"]), scalars["bias"]
  assert t == pytest.approx(10.0, rel=1e-6) and b == -10.0
  np.testing.assert_allclose(float(loss), _siglip_loss64(img, txt, t, b), rtol=1e-5)
  assert float(metrics["t"]) == pytest.approx(10.0, rel=1e-5)
  # At init almost every pair's logit is ~ -10: the loss is dominated by the N positives,
  # about log(1 + e^10) each (the paper's reason for b = -10: no large initial correction).
  assert float(loss) == pytest.approx(math.log1p(math.exp(10.0)), rel=0.5)


def test_temperature_and_bias_learn(setup):
  method, batch, params, aux = setup
  img, txt, _ = ith.tower_outputs(method, params, batch)
  grads = ith.assert_every_parameter_gets_gradient(method, params, aux, batch)
  assert set(grads) == {
    "image_encoder",
    "text_encoder",
    "image_proj",
    "text_proj",
    "t_prime",
    "bias",
  }
  h = 1e-4
  t0, b0 = math.log(10.0), -10.0
  d_t = (
    _siglip_loss64(img, txt, math.exp(t0 + h), b0) - _siglip_loss64(img, txt, math.exp(t0 - h), b0)
  ) / (2 * h)
  d_b = (_siglip_loss64(img, txt, 10.0, b0 + h) - _siglip_loss64(img, txt, 10.0, b0 - h)) / (2 * h)
  np.testing.assert_allclose(float(grads["t_prime"]), d_t, rtol=1e-3)
  np.testing.assert_allclose(float(grads["bias"]), d_b, rtol=1e-3)
  assert float(grads["bias"]) < 0  # at b = -10 the positives pull the bias up


def test_encode_is_the_image_tower(setup):
  ith.encode_is_the_image_tower(*setup)


@pytest.mark.slow
def test_one_training_run_with_eval(tmp_path, data_dir):
  logged, _, _, results = ith.train_and_evaluate("siglip", str(tmp_path / "siglip"), data_dir)
  assert {"train/t", "train/b"} <= set(logged)
  assert (6, "zeroshot", "top1") in results and (6, "retrieval", "txt_to_img_top5") in results
  assert (6, "knn", "top1") in results and (6, "fewshot", "5shot_top1") in results
