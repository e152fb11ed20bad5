"""Collapse monitors: pure metrics of an embedding batch, not losses.

Joint-embedding methods can collapse to a constant (complete collapse) or to
a low-dimensional subspace (dimensional collapse) while their loss still looks
reasonable; these two numbers expose both. Each takes the global batch, returns
a float32 scalar, and passes no gradient (they are for logging).
"""
import jax
import jax.numpy as jnp


def _prepare(z):
  z = jax.lax.stop_gradient(jnp.asarray(z))
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  if z.ndim != 2 or z.shape[0] < 2:
    raise ValueError(
        f"z must be [batch, dim] with batch >= 2; got {z.shape}. Flatten "
        "token axes into the batch axis or pool them first.")
  return z


def embedding_std(z):
  """Std of L2-normalised embeddings, averaged over dimensions.

  The monitor of SimSiam (Chen & He 2021, sec. 4.1, fig. 2):

    z_hat = z / ||z||,   s = 1/D sum_j std_n(z_hat[n, j])   (population std)

  For embeddings spread isotropically on the sphere s ~ 1/sqrt(D); complete
  collapse (every example mapped to the same direction) gives 0.

  Args:
    z: [N, D] embeddings.

  Returns:
    A scalar.
  """
  z = _prepare(z)
  norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True))
  z = z / jnp.maximum(norm, 1e-12)
  return jnp.mean(jnp.std(z, axis=0))


def rankme(z, *, eps=1e-7):
  """RankMe effective rank (Garrido et al. 2023, eq. 1).

      p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps,
    RankMe(Z) = exp(-sum_k p_k log p_k)

  over the min(N, D) singular values of Z (not centered, as in the paper).
  Between 1 and min(N, D); equals r for r equal nonzero singular values, so
  dimensional collapse shows as a drop. Needs N >= D to measure full rank.

  Args:
    z: [N, D] embeddings.
    eps: the paper's epsilon (1e-7).

  Returns:
    A scalar.
  """
  z = _prepare(z)
  singular_values = jnp.linalg.svd(z, compute_uv=False)
  p = singular_values / jnp.maximum(jnp.sum(singular_values), 1e-12) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))
