"""jaxssl.kernels: one backend layer. The kernels are picked from a mesh's platform, model code
names no backend, and every CPU kernel computes the reference op's function with its
parameters."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import kernels
from jaxssl import parallel
from jaxssl.kernels import cpu

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Code every backend runs: it must not look at the host's backend, nor name a backend's kernels.
REFERENCE_CODE = [
  *sorted((ROOT / "jaxssl" / "models").glob("*.py")),
  *sorted((ROOT / "jaxssl" / "methods").glob("*.py")),
  ROOT / "jaxssl" / "step.py",
]
HOST_BACKEND = re.compile(r"default_backend|jax\.devices\(|local_devices\(|\.platform\b")
BACKEND_MODULE = re.compile(r"jaxssl\.kernels\.cpu|from jaxssl\.kernels import cpu|xla_cpu")


def test_model_and_step_code_names_no_backend():
  offenders = [
    f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
    for path in REFERENCE_CODE
    for i, line in enumerate(path.read_text().splitlines(), 1)
    if HOST_BACKEND.search(line) or BACKEND_MODULE.search(line)
  ]
  assert len(REFERENCE_CODE) > 20 and not offenders, offenders


def test_kernels_come_from_the_mesh_platform():
  mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
  assert mesh.devices.flat[0].platform == "cpu"
  assert kernels.for_mesh(mesh) is cpu.KERNELS
  assert kernels.for_platform("tpu") is kernels.REFERENCE
  assert kernels.for_platform("gpu") is kernels.REFERENCE
  assert kernels.REFERENCE.compiler_options() == {} and kernels.REFERENCE.host_advice() is None
  assert kernels.REFERENCE.dense is nn.Dense
  assert kernels.REFERENCE.dot_general is jax.lax.dot_general


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cpu_dense_and_gelu_compute_the_reference_function(dtype):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6, 12)), jnp.float32)
  params = nn.Dense(16).init(jax.random.key(0), x)
  got = cpu.KERNELS.dense(16, dtype=dtype).apply(params, x)
  want = kernels.REFERENCE.dense(16, dtype=dtype).apply(params, x)
  assert got.dtype == want.dtype == dtype
  # bf16: one rounding of a float32-accumulated product against a bf16 dot: 2^-7 relative.
  tol = 0 if dtype == jnp.float32 else 2.0**-7 * float(jnp.abs(want.astype(jnp.float32)).max())
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol)
  y = x.astype(dtype)
  for approximate in (True, False):
    got = cpu.KERNELS.gelu(y, approximate=approximate)
    want = kernels.REFERENCE.gelu(y, approximate=approximate)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2.0**-7 * 4
    )


def test_cpu_conv_and_max_pool_compute_the_reference_function():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 9, 3)), jnp.float32)
  args = dict(strides=(2, 2), padding=((1, 1), (1, 1)))
  params = kernels.REFERENCE.conv(4, (3, 3), **args).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
    jnp.shape, cpu.KERNELS.conv(4, (3, 3), **args).init(jax.random.key(0), x)
  )
  np.testing.assert_allclose(
    cpu.KERNELS.conv(4, (3, 3), **args).apply(params, x),
    kernels.REFERENCE.conv(4, (3, 3), **args).apply(params, x),
    rtol=1e-5,
    atol=1e-5,
  )
  pool = ((3, 3), (2, 2), ((1, 1), (1, 1)))
  np.testing.assert_array_equal(
    cpu.KERNELS.max_pool(x, *pool), kernels.REFERENCE.max_pool(x, *pool)
  )
