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
      "token axes into the batch axis or pool them first."
    )
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


def _singular_values(z):
  """Singular values of z [N, D] (float32) from its smaller Gram matrix.

  sigma_k(Z)^2 are the eigenvalues of the k x k Gram matrix G (Z^T Z or Z Z^T, k = min(N, D)),
  so the SVD of the tall N x D matrix is replaced by one k x k product and a k x k symmetric
  eigenproblem. G is positive semi-definite, so its singular values are its eigenvalues; we
  take them with LAPACK gesdd without vectors (JAX's eigvalsh computes the eigenvectors too,
  which costs more). The product uses HIGHEST precision: on TPU/GPU the default would round
  the inputs to bfloat16/TF32.

  G squares the condition number: in float32 its eigenvalues carry an absolute error of
  about k * eps * lambda_max, so sigma_k / sigma_max below sqrt(k * eps) (3e-3 at k = 64) is
  not resolved. Those values are set to zero, the `matrix_rank` convention applied to G:
  exactly low-rank embeddings then give exact counts instead of rounding noise, and each
  zeroed value changed the entropy by at most -p log p with p < sqrt(k * eps).
  """
  n, d = z.shape
  gram = (
    jnp.matmul(z.T, z, precision=jax.lax.Precision.HIGHEST)
    if n >= d
    else jnp.matmul(z, z.T, precision=jax.lax.Precision.HIGHEST)
  )
  eigenvalues = jnp.linalg.svd(gram, compute_uv=False)
  resolvable = eigenvalues.max() * min(n, d) * jnp.finfo(jnp.float32).eps
  return jnp.sqrt(jnp.where(eigenvalues > resolvable, eigenvalues, 0.0))


def rankme(z, *, eps=1e-7):
  """RankMe effective rank (Garrido et al. 2023, eq. 1).

      p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps,
    RankMe(Z) = exp(-sum_k p_k log p_k)

  over the min(N, D) singular values of Z (not centered, as in the paper).
  Between 1 and min(N, D); equals r for r equal nonzero singular values, so
  dimensional collapse shows as a drop. Needs N >= D to measure full rank.
  The singular values come from the smaller Gram matrix (see `_singular_values`),
  several times cheaper than an SVD of Z; singular values below sqrt(k * eps_f32)
  of the largest are treated as zero.

  Args:
    z: [N, D] embeddings.
    eps: the paper's epsilon (1e-7).

  Returns:
    A scalar.
  """
  z = _prepare(z).astype(jnp.float32)
  singular_values = _singular_values(z)
  p = singular_values / jnp.maximum(jnp.sum(singular_values), 1e-12) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))
