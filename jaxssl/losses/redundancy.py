"""Redundancy-reduction losses: VICReg and Barlow Twins.

Both need batch statistics (means, variances, a D x D covariance or
cross-correlation), so they are computed on the global batch: under `jax.jit`
with batch-sharded inputs XLA reduces across devices, which is what the papers'
all-gathers / SyncBatchNorm do by hand.
"""

import jax.numpy as jnp

from jaxssl.losses import checks


def _upcast(x):
  """Casts to float32, or keeps float64 (used by the float64 gradient tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _sum_off_diagonal_squares(matrix):
  # Masking (not "total minus diagonal") avoids cancellation when the diagonal
  # dominates, as it does for a well-trained Barlow Twins correlation matrix.
  off_diagonal = jnp.where(jnp.eye(matrix.shape[0], dtype=bool), 0.0, matrix)
  return jnp.sum(jnp.square(off_diagonal))


def _variance_term(z, eps, gamma):
  """v(Z) = 1/D sum_j max(0, gamma - sqrt(Var(z^j) + eps)), unbiased Var."""
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  return jnp.mean(jnp.maximum(0.0, gamma - std)), jnp.mean(std)


def _covariance_term(z):
  """c(Z) = 1/D sum_{i != j} C(Z)_ij^2 with C the unbiased covariance."""
  n, d = z.shape
  centered = z - jnp.mean(z, axis=0)
  cov = centered.T @ centered / (n - 1)
  return _sum_off_diagonal_squares(cov) / d


def vicreg(z1, z2, *, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4, gamma=1.0):
  """VICReg: variance-invariance-covariance regularization (Bardes et al. 2022).

  Eq. 6 as the official code computes it (facebookresearch/vicreg `main_vicreg.py`
  `VICReg.forward`, l.194-220):

    L = lambda * s(Z, Z') + mu * [v(Z) + v(Z')] / 2 + nu * [c(Z) + c(Z')]

    s(Z, Z') = mean over batch and dims of (z - z')^2  (the paper's alg. 1
               `mse_loss`; eq. 5 writes the per-example sum over dims, which is
               D times larger and not what the coefficients were tuned with),
    v(Z)     = 1/D sum_j max(0, gamma - sqrt(Var(z^j) + eps))       (eq. 1),
    c(Z)     = 1/D sum_{i != j} Cov(Z)_ij^2                         (eq. 4),

  with unbiased (N - 1) variance / covariance over the batch, as in the paper.
  The two variance terms are averaged, not summed as eq. 6 writes them: the
  official code halves each (`std_loss = mean(relu(1 - std_x)) / 2 +
  mean(relu(1 - std_y)) / 2`, l.205-207), and mu = 25 was tuned with that.

  Args:
    z1: [N, D] expander outputs of the first view.
    z2: [N, D] expander outputs of the second view; row n pairs with z1[n].
    sim_coeff: lambda (25).
    std_coeff: mu (25).
    cov_coeff: nu (1).
    eps: epsilon inside the std (1e-4).
    gamma: target std (1).

  Returns:
    (loss, metrics): the unweighted terms 'invariance', 'variance'
    ((v(Z) + v(Z')) / 2), 'covariance' (c(Z) + c(Z')), and 'embedding_std' (mean
    per-dimension std over both branches; 0 means collapse).
  """
  z1, z2 = _upcast(z1), _upcast(z2)
  checks.check_paired("z1", z1, "z2", z2, needs="batch statistics")
  invariance = jnp.mean(jnp.square(z1 - z2))
  variance1, std1 = _variance_term(z1, eps, gamma)
  variance2, std2 = _variance_term(z2, eps, gamma)
  variance = 0.5 * (variance1 + variance2)
  covariance = _covariance_term(z1) + _covariance_term(z2)
  loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
  metrics = {
    "invariance": invariance,
    "variance": variance,
    "covariance": covariance,
    "embedding_std": 0.5 * (std1 + std2),
  }
  return loss, metrics


def _batch_standardize(z, eps):
  """BatchNorm1d without affine: (z - mean) / sqrt(biased var + eps)."""
  mean = jnp.mean(z, axis=0)
  var = jnp.mean(jnp.square(z - mean), axis=0)
  return (z - mean) / jnp.sqrt(var + eps)


def barlow_twins(z1, z2, *, lambda_=5e-3, eps=1e-5):
  """Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, eq. 1).

    L = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2,
    C = z1n^T z2n / N   [D, D],

  where z1n, z2n are the embeddings standardised per dimension over the batch
  (BatchNorm without affine, biased variance, eps 1e-5, as in the official
  code), so C is the cross-correlation matrix of eq. 2.

  Args:
    z1: [N, D] projector outputs of the first view.
    z2: [N, D] projector outputs of the second view; row n pairs with z1[n].
    lambda_: weight of the redundancy-reduction term (5e-3 in the paper;
      the official code's default and the reported run use 0.0051).
    eps: variance epsilon of the standardisation.

  Returns:
    (loss, metrics): 'on_diagonal' (invariance term), 'off_diagonal'
    (unweighted redundancy term) and 'mean_diagonal' (mean C_ii; 1 when the
    two views agree perfectly).
  """
  z1, z2 = _upcast(z1), _upcast(z2)
  checks.check_paired("z1", z1, "z2", z2, needs="batch statistics")
  n = z1.shape[0]
  corr = _batch_standardize(z1, eps).T @ _batch_standardize(z2, eps) / n
  diagonal = jnp.diagonal(corr)
  on_diagonal = jnp.sum(jnp.square(1.0 - diagonal))
  off_diagonal = _sum_off_diagonal_squares(corr)
  loss = on_diagonal + lambda_ * off_diagonal
  metrics = {
    "on_diagonal": on_diagonal,
    "off_diagonal": off_diagonal,
    "mean_diagonal": jnp.mean(diagonal),
  }
  return loss, metrics
