"""Every registered method satisfies the method interface of jaxssl/methods/base.py."""

import inspect

import pytest

import harness
from jaxssl import methods
from jaxssl.methods import base

# The argument names the trainer, the step and the eval job pass (they call positionally, but a
# method whose arguments mean something else in another order would still be wrong).
SIGNATURES = {
  "train_transform": ["info"],
  "init": ["rng", "batch"],
  "loss_fn": ["params", "aux", "batch", "rng", "step"],
  "post_update": ["state"],
  "encode": ["params", "aux"],  # then images (or tokens, for a language model)
}


def test_the_protocol_is_not_a_method():
  assert "base" not in methods.available()


@pytest.mark.parametrize("name", methods.available())
def test_method_satisfies_the_protocol(name):
  method = methods.build(harness.load_config(name))
  assert isinstance(method, base.MethodProtocol)
  assert isinstance(method.batch_keys, tuple) and method.batch_keys
  assert all(isinstance(k, str) for k in method.batch_keys)
  for attribute, expected in SIGNATURES.items():
    parameters = list(inspect.signature(getattr(method, attribute)).parameters)
    assert parameters[: len(expected)] == expected, (attribute, parameters)
  assert len(inspect.signature(method.encode).parameters) == 3
