"""Contrastive losses: SimCLR NT-Xent, MoCo v3 InfoNCE, CLIP and SigLIP.

Every function takes the global batch (under `jax.jit` with sharded inputs XLA
inserts the all-gathers the similarity matrices need), computes in at least
float32 whatever the input dtype, and returns `(loss, metrics)` with `loss` a
scalar and `metrics` a dict of scalars.
"""

import jax
import jax.numpy as jnp

from jaxssl.losses import checks

# Added to logits that must never win a softmax (a view's similarity to
# itself). A large finite number rather than -inf: exp underflows to exactly 0
# either way, but -inf would turn `0 * logit` terms (e.g. an entropy) into NaN.
_MASKED_LOGIT = -1e9


def _upcast(x):
  """Casts to float32, or keeps float64 (used by the float64 gradient tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _l2_normalize(x, eps=1e-12):
  """x / max(||x||, eps) on the last axis, as torch.nn.functional.normalize."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _cross_entropy_with_diagonal_labels(logits):
  """Per-row CE for [N, M] logits whose correct column for row i is i."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.diagonal(log_probs)


def _top1_diagonal(logits):
  """Fraction of rows whose diagonal entry is the (first) argmax."""
  hits = jnp.argmax(logits, axis=-1) == jnp.arange(logits.shape[0])
  return jnp.mean(hits.astype(jnp.float32))


def nt_xent(z1, z2, *, temperature=0.1):
  """SimCLR normalized-temperature cross-entropy (Chen et al. 2020, eq. 1).

  The 2N projections z = [z1; z2] are L2-normalised and compared by cosine
  similarity sim(i, k) = z_i . z_k. For each anchor i its positive j(i) is the
  other view of the same example; the remaining 2N - 2 views are negatives:

    l(i, j) = -log( exp(sim(i, j) / T) / sum_{k != i} exp(sim(i, k) / T) ),
    L = 1 / (2N) * sum_{i=1}^{2N} l(i, j(i)),

  i.e. both directions (z1 -> z2 and z2 -> z1) averaged over all 2N anchors.

  Args:
    z1: [N, D] projections of the first view.
    z2: [N, D] projections of the second view; row n pairs with z1[n].
    temperature: T in eq. 1 (SimCLR uses 0.1 with large batches, 0.5 small).

  Returns:
    (loss, metrics): metrics 'contrastive_acc' (fraction of anchors whose
    positive has the largest logit among the 2N - 1 candidates), 'logits_pos'
    (mean positive logit sim / T), 'logits_neg' (mean negative logit) and
    'entropy' (mean entropy of each anchor's softmax over candidates; log(2N-1)
    when embeddings are uninformative, near 0 when every positive is found).
  """
  z1, z2 = _upcast(z1), _upcast(z2)
  checks.check_paired("z1", z1, "z2", z2, needs="contrastive negatives")
  n = z1.shape[0]
  z = _l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = z @ z.T / temperature
  # Exclude each view's similarity with itself from its softmax denominator.
  self_mask = jnp.eye(2 * n, dtype=bool)
  logits = jnp.where(self_mask, _MASKED_LOGIT, logits)
  # Row i in [0, N) has its positive at i + N, row i in [N, 2N) at i - N.
  positive_index = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  log_prob_pos = jnp.take_along_axis(log_probs, positive_index[:, None], axis=-1)[:, 0]
  loss = -jnp.mean(log_prob_pos)

  logits_pos = jnp.take_along_axis(logits, positive_index[:, None], axis=-1)
  negative_mask = ~self_mask & (jnp.arange(2 * n)[None, :] != positive_index[:, None])
  probs = jnp.exp(log_probs)
  metrics = {
    "contrastive_acc": jnp.mean(
      (jnp.argmax(logits, axis=-1) == positive_index).astype(jnp.float32)
    ),
    "logits_pos": jnp.mean(logits_pos),
    "logits_neg": jnp.sum(jnp.where(negative_mask, logits, 0.0)) / (2 * n * (2 * n - 2)),
    # Masked entries have probability exactly 0; where() keeps 0 * (-1e9)
    # out of the sum.
    "entropy": -jnp.mean(jnp.sum(jnp.where(self_mask, 0.0, probs * log_probs), axis=-1)),
  }
  return loss, metrics


def info_nce(q, k, *, temperature=0.2):
  """MoCo v3 InfoNCE with in-batch keys (Chen, Xie & He 2021, alg. 1).

    logits = normalize(q) . normalize(k)^T / T,   labels = arange(N),
    L = 2T * CE(logits, labels)   (mean over the N queries).

  The 2T factor is in the official code (moco-v3 `contrastive_loss`); it makes
  the gradient magnitude independent of T. This is one direction: MoCo v3's
  method sums info_nce(q1, k2) + info_nce(q2, k1).

  Keys come from the momentum encoder, whose parameters are not differentiated,
  so no stop_gradient is applied here; a method that feeds keys computed from
  trainable parameters must stop the gradient itself.

  Args:
    q: [N, D] queries (online encoder + predictor, view a).
    k: [N, D] keys (momentum encoder, view b); k[n] is q[n]'s positive and the
      other N - 1 keys are its negatives.
    temperature: T (0.2 in the MoCo v3 ViT recipe).

  Returns:
    (loss, metrics): 'contrastive_acc' (top-1 of the positive key) and
    'logits_pos' (mean positive logit).
  """
  q, k = _upcast(q), _upcast(k)
  checks.check_paired("q", q, "k", k, needs="contrastive negatives")
  logits = _l2_normalize(q) @ _l2_normalize(k).T / temperature
  loss = jnp.mean(_cross_entropy_with_diagonal_labels(logits)) * (2.0 * temperature)
  metrics = {
    "contrastive_acc": _top1_diagonal(logits),
    "logits_pos": jnp.mean(jnp.diagonal(logits)),
  }
  return loss, metrics


def clip(img, txt, logit_scale):
  """CLIP symmetric image-text contrastive loss (Radford et al. 2021, fig. 3).

    logits = logit_scale * normalize(img) . normalize(txt)^T     [N, N]
    L = (CE(logits, arange) + CE(logits^T, arange)) / 2

  Args:
    img: [N, D] image embeddings (normalised here).
    txt: [N, D] text embeddings; txt[n] is the caption of img[n].
    logit_scale: scalar multiplier, already exponentiated: CLIP learns
      log(scale) (init log(1/0.07)) and clips the scale at 100; the method
      does both and passes exp(.) here.

  Returns:
    (loss, metrics): 'img_to_txt_acc', 'txt_to_img_acc' (top-1 retrieval in the
    batch), 'logits_pos' and 'logit_scale'.
  """
  img, txt = _upcast(img), _upcast(txt)
  checks.check_paired("img", img, "txt", txt, needs="contrastive negatives")
  logit_scale = _upcast(logit_scale)
  if logit_scale.ndim != 0:
    raise ValueError(
      f"logit_scale must be a scalar; got shape {logit_scale.shape}. Pass "
      "exp(log_scale) of the single learned temperature."
    )
  logits = logit_scale * (_l2_normalize(img) @ _l2_normalize(txt).T)
  loss = 0.5 * (
    jnp.mean(_cross_entropy_with_diagonal_labels(logits))
    + jnp.mean(_cross_entropy_with_diagonal_labels(logits.T))
  )
  metrics = {
    "img_to_txt_acc": _top1_diagonal(logits),
    "txt_to_img_acc": _top1_diagonal(logits.T),
    "logits_pos": jnp.mean(jnp.diagonal(logits)),
    "logit_scale": logit_scale,
  }
  return loss, metrics


def siglip(img, txt, t, b):
  """SigLIP pairwise sigmoid loss (Zhai et al. 2023, eq. 1 and alg. 1).

  Every image-text pair is an independent binary classification:

    logits_ij = t * normalize(img_i) . normalize(txt_j) + b
    z_ij = +1 if i == j else -1
    L = -1/N * sum_i sum_j log sigmoid(z_ij * logits_ij)

  (a sum over the N^2 pairs divided by the batch size, as in the paper).

  Args:
    img: [N, D] image embeddings (normalised here).
    txt: [N, D] text embeddings; txt[n] is the caption of img[n].
    t: scalar temperature, already exponentiated (the paper learns t' with
      t = exp(t'), init t' = log 10); the method computes exp(t').
    b: scalar bias (init -10 in the paper).

  Returns:
    (loss, metrics): 'img_to_txt_acc', 'txt_to_img_acc', 'logits_pos',
    'logits_neg' (mean logits of matching / non-matching pairs), 't', 'b'.
  """
  img, txt = _upcast(img), _upcast(txt)
  checks.check_paired("img", img, "txt", txt, needs="contrastive negatives")
  t, b = _upcast(t), _upcast(b)
  if t.ndim != 0 or b.ndim != 0:
    raise ValueError(
      f"t and b must be scalars; got shapes {t.shape} and {b.shape}. Pass "
      "the single learned temperature exp(t') and bias b."
    )
  n = img.shape[0]
  logits = t * (_l2_normalize(img) @ _l2_normalize(txt).T) + b
  eye = jnp.eye(n, dtype=bool)
  labels = jnp.where(eye, 1.0, -1.0)
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n
  metrics = {
    "img_to_txt_acc": _top1_diagonal(logits),
    "txt_to_img_acc": _top1_diagonal(logits.T),
    "logits_pos": jnp.mean(jnp.diagonal(logits)),
    "logits_neg": jnp.sum(jnp.where(eye, 0.0, logits)) / (n * (n - 1)),
    "t": t,
    "b": b,
  }
  return loss, metrics
