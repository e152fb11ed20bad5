"""Self-distillation losses: BYOL, DINO (centering, Sinkhorn), iBOT, KoLeo.

A student is trained to match a teacher (an EMA of the student, updated by the
method, not here). Teacher outputs are targets: every loss here applies
`jax.lax.stop_gradient` to them, so no gradient can leak into the teacher even
when a method computes teacher outputs from trainable parameters.

All functions see the global batch and compute in at least float32.
"""

import jax
import jax.numpy as jnp
import optax


def _upcast(x):
  """Casts to float32, or keeps float64 (used by the float64 gradient tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def byol(p1, p2, t1, t2):
  """BYOL normalized regression loss (Grill et al. 2020, eq. 2).

  For an online prediction p and a target projection t of the other view,

    l(p, t) = || p/||p|| - t/||t|| ||^2 = 2 - 2 cos(p, t),

  and BYOL symmetrizes by swapping the views. Here the two directions are
  averaged, L = mean_n [l(p1_n, t2_n) + l(p2_n, t1_n)] / 2, the jaxssl contract
  (DESIGN.md); the paper's L^BYOL_total and deepmind's byol_experiment.py *sum*
  them, which is exactly 2x this value (scale-invariant under LARS, but halves
  the gradient under SGD/Adam-with-weight-decay tuning).

  Args:
    p1: [N, D] online predictions of view 1.
    p2: [N, D] online predictions of view 2.
    t1: [N, D] target-network projections of view 1 (stop-gradient applied).
    t2: [N, D] target-network projections of view 2 (stop-gradient applied).

  Returns:
    (loss, metrics): 'cosine' (mean cosine between predictions and targets).
  """
  arrays = [_upcast(a) for a in (p1, p2, t1, t2)]
  shapes = {a.shape for a in arrays}
  if len(shapes) != 1 or arrays[0].ndim != 2:
    raise ValueError(
      "p1, p2, t1, t2 must all be [batch, dim] with the same shape; got "
      f"{[a.shape for a in arrays]}. Project and predict both views with "
      "the same heads."
    )
  p1, p2, t1, t2 = arrays

  def cosine(p, t):
    # Each vector divided by sqrt(max(||x||^2, 1e-12)), as byol_experiment.py normalizes.
    return optax.losses.cosine_similarity(p, jax.lax.stop_gradient(t), epsilon=1e-12)

  cos = 0.5 * (cosine(p1, t2) + cosine(p2, t1))
  loss = jnp.mean(2.0 - 2.0 * cos)
  return loss, {"cosine": jnp.mean(cos)}


def simsiam(p1, p2, z1, z2):
  """SimSiam symmetric negative cosine (Chen & He 2021, eq. 1-2).

    D(p, z) = -cos(p, stopgrad(z)),   L = D(p1, z2) / 2 + D(p2, z1) / 2,

  averaged over the batch; the minimum is -1. It is BYOL's normalized regression with the
  projections as targets (2 - 2 cos = 2 + 2 D), so the cosine (with its stop-gradient on
  z) is computed once, by `byol`.

  Args:
    p1, p2: [N, D] predictor outputs of views 1 and 2.
    z1, z2: [N, D] projector outputs of views 1 and 2 (stop-gradient applied here).

  Returns:
    (loss, metrics): 'cosine' (mean cosine between predictions and the other view's
    projections, = -loss).
  """
  _, metrics = byol(p1, p2, z1, z2)
  return -metrics["cosine"], metrics


def _check_views(student, teacher):
  if student.ndim != 3 or teacher.ndim != 3:
    raise ValueError(
      "logits must be [views, batch, K]; got student "
      f"{student.shape} and teacher {teacher.shape}. Stack the crops of each "
      "network along a leading views axis."
    )
  if student.shape[1:] != teacher.shape[1:]:
    raise ValueError(
      f"student {student.shape} and teacher {teacher.shape} logits must "
      "share batch and K. Use the same head output size for both networks."
    )
  if teacher.shape[0] > student.shape[0] or student.shape[0] < 2:
    raise ValueError(
      f"need teacher views ({teacher.shape[0]}) <= student views "
      f"({student.shape[0]}) and at least 2 student views: the teacher's "
      "views must be the first (global) student views."
    )


def dino_cross_entropy(student_logits, teacher_probs, *, student_temp=0.1):
  """Cross-view cross-entropy of DINO, given teacher target distributions.

    L = 1/|pairs| sum_{(it, is), it != is} 1/B sum_b
          H(P_t[it, b], softmax(s[is, b] / student_temp)),

  where H(p, q) = -sum_k p_k log q_k. Teacher view it is the same crop as
  student view it (teacher views are the first Vt student views, the global
  crops), so equal indices are skipped. Shared by `dino` (centering) and
  DINOv2 (teacher targets from `sinkhorn_knopp`).

  Args:
    student_logits: [Vs, B, K] student head outputs for all crops.
    teacher_probs: [Vt, B, K] teacher target distributions (stop-gradient).
    student_temp: student softmax temperature (0.1).

  Returns:
    (loss, metrics): 'kl_teacher_student' (mean KL(P_t || P_s) over pairs;
    DINO sec. 5.3 shows it goes to 0 under collapse), 'teacher_entropy'.
  """
  student_logits = _upcast(student_logits)
  teacher_probs = jax.lax.stop_gradient(_upcast(teacher_probs))
  _check_views(student_logits, teacher_probs)
  n_teacher, batch, _ = teacher_probs.shape
  n_student = student_logits.shape[0]
  student_log_probs = jax.nn.log_softmax(student_logits / student_temp, -1)
  # ce[it, is] = mean_b H(P_t[it, b], P_s[is, b]), all pairs in one einsum.
  ce = -jnp.einsum("tbk,sbk->ts", teacher_probs, student_log_probs) / batch
  different_view = jnp.arange(n_teacher)[:, None] != jnp.arange(n_student)[None, :]
  n_pairs = n_teacher * (n_student - 1)
  loss = jnp.sum(jnp.where(different_view, ce, 0.0)) / n_pairs
  # 0 * log 0 is 0 for a one-hot teacher: xlogy handles that without NaN.
  teacher_entropy = -jnp.mean(jnp.sum(jax.scipy.special.xlogy(teacher_probs, teacher_probs), -1))
  # Every teacher view meets Vs - 1 student views, so the pair-averaged
  # teacher entropy equals its plain mean and KL = CE - H(P_t).
  return loss, {"kl_teacher_student": loss - teacher_entropy, "teacher_entropy": teacher_entropy}


def dino(student_logits, teacher_logits, center, *, student_temp=0.1, teacher_temp=0.04):
  """DINO self-distillation loss (Caron et al. 2021, eq. 2-3 and alg. 1).

  Teacher targets are centered and sharpened, with stop-gradient:
    P_t = softmax((teacher_logits - center) / teacher_temp),
  and the loss is `dino_cross_entropy` between P_t and the student's
  softmax(student_logits / student_temp) over all (teacher view, student view)
  pairs of different crops, averaged over pairs and batch.

  The center is method state: this returns the batch statistic in
  metrics['batch_center'] and the method updates its EMA with
  `dino_center_update` (center momentum 0.9 in the paper).

  Args:
    student_logits: [Vs, B, K] student head outputs, global crops first.
    teacher_logits: [Vt, B, K] teacher head outputs of the Vt global crops.
    center: [K] running center of teacher logits.
    student_temp: 0.1.
    teacher_temp: 0.04 (the paper warms it up from 0.04 to 0.07 in some runs;
      the method passes the scheduled value).

  Returns:
    (loss, metrics) with the scalars of `dino_cross_entropy` plus
    'teacher_marginal_entropy' (entropy of the batch-mean teacher distribution:
    log K when the batch spreads over all prototypes, 0 when every example
    lands on the same one) and 'batch_center', a [K] vector (the only
    non-scalar metric): the mean teacher logit over views and batch.
  """
  teacher_logits = jax.lax.stop_gradient(_upcast(teacher_logits))
  _check_views(_upcast(student_logits), teacher_logits)
  center = _upcast(center)
  k = teacher_logits.shape[-1]
  if center.shape not in ((k,), (1, k)):
    raise ValueError(
      f"center must have shape [{k}] (one entry per prototype); got "
      f"{center.shape}. Initialise it with zeros of the head output size."
    )
  teacher_probs = jax.nn.softmax((teacher_logits - center.reshape(k)) / teacher_temp, axis=-1)
  loss, metrics = dino_cross_entropy(student_logits, teacher_probs, student_temp=student_temp)
  marginal = jnp.mean(teacher_probs, axis=(0, 1))
  metrics["teacher_marginal_entropy"] = -jnp.sum(jax.scipy.special.xlogy(marginal, marginal))
  metrics["batch_center"] = jnp.mean(teacher_logits, axis=(0, 1))
  return loss, metrics


def dino_center_update(center, batch_center, *, momentum=0.9):
  """EMA of the teacher center (Caron et al. 2021, eq. 4).

    c <- m * c + (1 - m) * batch_center,   m = 0.9.

  Args:
    center: [K] current center.
    batch_center: [K] `metrics['batch_center']` from `dino`/`ibot_patch_loss`.
    momentum: m.

  Returns:
    The new [K] center, in center's dtype.
  """
  center = jnp.asarray(center)
  batch_center = jnp.asarray(batch_center)
  if center.shape != batch_center.shape:
    raise ValueError(
      f"center {center.shape} and batch_center {batch_center.shape} must "
      "have the same shape; pass metrics['batch_center'] of the same head."
    )
  new = momentum * center + (1.0 - momentum) * jax.lax.stop_gradient(
    batch_center.astype(center.dtype)
  )
  return new.astype(center.dtype)


def sinkhorn_knopp(teacher_logits, *, teacher_temp, n_iters=3, mask=None):
  """Sinkhorn-Knopp teacher targets (SwAV, Caron et al. 2020; DINOv2).

  Replaces DINO's centering in DINOv2. With Q = exp(teacher_logits / T) viewed
  as a [K, B] matrix over all B samples of the global batch, alternately
  rescales rows (each prototype gets total mass 1/K) and columns (each sample
  1/B) `n_iters` times, then multiplies by B so each sample's row is a
  distribution over prototypes. Computed in the log domain: the same values as
  DINOv2's `sinkhorn_knopp_teacher`, but exp(logits / 0.04) cannot overflow or
  underflow to 0 and make a row sum vanish.

  With `mask`, only the samples where it is 1 are balanced (DINOv2 runs its patch
  Sinkhorn-Knopp on the masked patches only, `ibot_patch_loss.py`
  `sinkhorn_knopp_teacher(..., n_masked_patches_tensor)`): they alone enter the
  prototype sums and B is their count. The other rows are still normalised per
  sample, so they are finite distributions, meant to be ignored by the loss.

  Args:
    teacher_logits: [..., K]; all leading axes (e.g. [Vt, B]) are samples that
      are balanced together, as DINOv2 does for both global crops.
    teacher_temp: T (DINOv2 warms it up from 0.04 to 0.07).
    n_iters: Sinkhorn iterations (3).
    mask: optional [...] (the leading axes), 1 / True for the samples to balance.
      With none set, every sample is balanced (the targets are then unused anyway).

  Returns:
    [..., K] teacher probabilities (rows sum to 1), stop-gradient applied.
  """
  logits = jax.lax.stop_gradient(_upcast(teacher_logits))
  shape = logits.shape
  k = shape[-1]
  scores = logits.reshape(-1, k) / teacher_temp
  if mask is None:
    weights = jnp.ones(scores.shape[:1], scores.dtype)
  else:
    if jnp.shape(mask) != shape[:-1]:
      raise ValueError(f"mask must be [...] = {shape[:-1]} (the samples); got {jnp.shape(mask)}.")
    weights = jnp.asarray(mask).reshape(-1).astype(scores.dtype)
    # No sample to balance: balance all, so the (ignored) rows stay finite.
    weights = jnp.where(jnp.sum(weights) > 0, weights, jnp.ones_like(weights))
  n_samples = jnp.sum(weights)
  column = weights[:, None]  # a prototype's mass sums over the balanced samples only
  log_q = scores - jax.nn.logsumexp(scores, b=column)  # the balanced part sums to 1
  for _ in range(n_iters):
    # Each prototype (a column here, a row of DINOv2's [K, B] Q) gets 1/K.
    log_q = log_q - jax.nn.logsumexp(log_q, axis=0, b=column, keepdims=True) - jnp.log(k)
    # Each sample gets 1/B.
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(n_samples)
  return jnp.exp(log_q + jnp.log(n_samples)).reshape(shape)


def _koleo_terms(x, eps):
  """Per-point -log(d_i + eps) and d_i within one set x: [N, D] (see `koleo`)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  x = x / jnp.maximum(norm, eps)
  dots = x @ x.T
  # Cosines are >= -1, so -2 on the diagonal excludes self as a neighbour.
  dots = jnp.where(jnp.eye(x.shape[0], dtype=bool), -2.0, dots)
  neighbour = jnp.argmax(jax.lax.stop_gradient(dots), axis=-1)
  squared = jnp.sum(jnp.square(x - x[neighbour]), axis=-1)
  # Floor before sqrt: duplicate points would otherwise give a NaN gradient.
  distance = jnp.sqrt(jnp.maximum(squared, eps * eps))
  return -jnp.log(distance + eps), distance


def koleo(x, *, eps=1e-8, group_size=None):
  """KoLeo regularizer (Sablayrolles et al. 2019; used by DINOv2).

  A Kozachenko-Leonenko differential-entropy estimate that spreads features:
  with x_i L2-normalised and d_i the distance from x_i to its nearest other
  point in the batch,

    L = -1/N sum_i log(d_i + eps).

  The nearest neighbour is chosen without gradient (argmax of dot products,
  self excluded); the distance is differentiable w.r.t. both points, as in
  DINOv2's KoLeoLoss. DINOv2 applies it to each global crop's class tokens
  separately (the method splits the batch).

  `group_size` g: the batch is cut into N / g consecutive groups, each point's
  neighbour is searched inside its group only, and L is the mean over groups.
  DINOv2's `koleo_loss.py` has no collective: each GPU takes the neighbours
  among its own `batch_size_per_gpu` (64) images and the GPU losses are
  averaged (`ssl_meta_arch.py` forward_backward), which is g = 64 whatever the
  device count here.

  Args:
    x: [N, D] features, N >= 2.
    eps: inside the log and as the normalisation floor (1e-8).
    group_size: None (the whole batch) or g >= 2 dividing N.

  Returns:
    (loss, metrics): 'nn_distance' (mean nearest-neighbour distance).
  """
  x = _upcast(x)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(
      f"x must be [batch, dim] with batch >= 2 (a nearest neighbour is needed); got {x.shape}."
    )
  group = x.shape[0] if group_size is None else int(group_size)
  if group < 2 or x.shape[0] % group:
    raise ValueError(
      f"koleo group_size={group_size} must be >= 2 and divide the batch {x.shape[0]}."
    )
  groups = x.reshape(x.shape[0] // group, group, x.shape[1])
  terms, distance = jax.vmap(lambda g: _koleo_terms(g, eps))(groups)
  # Equal groups: the mean over groups of their means is the mean over all points.
  return jnp.mean(terms), {"nn_distance": jnp.mean(distance)}


def _check_patches(student, teacher, mask):
  if student.ndim < 3 or student.shape != teacher.shape:
    raise ValueError(
      "patch logits must be [..., N, K] with the same shape for student "
      f"and teacher; got {student.shape} and {teacher.shape}."
    )
  if mask.shape != student.shape[:-1]:
    raise ValueError(
      f"mask must be [..., N] = {student.shape[:-1]} (1 where the student's "
      f"patch was masked); got {mask.shape}."
    )


def ibot_patch_cross_entropy(student_patch_logits, teacher_patch_probs, mask, *, student_temp=0.1):
  """iBOT masked-patch cross-entropy given teacher target distributions.

    L = mean_images [ sum_n m_n H(P_t[n], softmax(s[n] / T_s))
                      / max(sum_n m_n, 1) ]

  Same-view pairs: the teacher sees the full crop, the student the masked one.
  An image with no masked patch contributes 0 and still counts in the mean,
  as in the official iBOT code (`clamp(min=1.0)`).

  Args:
    student_patch_logits: [..., N, K] (e.g. [V, B, N, K] or [B, N, K]).
    teacher_patch_probs: [..., N, K] teacher targets (stop-gradient).
    mask: [..., N], 1 / True where the patch was masked for the student.
    student_temp: 0.1.

  Returns:
    (loss, metrics): 'mask_ratio' (mean of mask).
  """
  student = _upcast(student_patch_logits)
  teacher_probs = jax.lax.stop_gradient(_upcast(teacher_patch_probs))
  mask = jnp.asarray(mask)
  _check_patches(student, teacher_probs, mask)
  mask = mask.astype(student.dtype)
  ce = -jnp.sum(teacher_probs * jax.nn.log_softmax(student / student_temp, -1), axis=-1)
  per_image = jnp.sum(ce * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  return jnp.mean(per_image), {"mask_ratio": jnp.mean(mask)}


def ibot_patch_loss(
  student_patch_logits, teacher_patch_logits, mask, center, *, student_temp=0.1, teacher_temp=0.04
):
  """iBOT masked image modelling loss on patch tokens (Zhou et al. 2022, eq. 2).

  Teacher patch targets are centered and sharpened like DINO's class token,
  with their own center:
    P_t = stop_gradient(softmax((teacher_patch_logits - center) / T_t)),
  and the loss is `ibot_patch_cross_entropy` on the student's masked patches,
  averaged per image over its masked patches, then over images (and views).

  Args:
    student_patch_logits: [..., N, K] student head on the masked crops.
    teacher_patch_logits: [..., N, K] teacher head on the same, unmasked crops.
    mask: [..., N], 1 / True where the student's patch was masked.
    center: [K] running patch center (momentum 0.9, `dino_center_update`).
    student_temp: 0.1.
    teacher_temp: 0.04 (warmed up to 0.07 in the paper's schedule).

  Returns:
    (loss, metrics): 'mask_ratio', 'teacher_entropy' (over masked patches) and
    'batch_center' ([K], mean teacher patch logit over all patches and images,
    the only non-scalar metric).
  """
  teacher = jax.lax.stop_gradient(_upcast(teacher_patch_logits))
  center = _upcast(center)
  k = teacher.shape[-1]
  if center.shape not in ((k,), (1, k)):
    raise ValueError(
      f"center must have shape [{k}]; got {center.shape}. Initialise the "
      "patch center with zeros of the patch head output size."
    )
  teacher_probs = jax.nn.softmax((teacher - center.reshape(k)) / teacher_temp, axis=-1)
  loss, metrics = ibot_patch_cross_entropy(
    student_patch_logits, teacher_probs, mask, student_temp=student_temp
  )
  weights = jnp.asarray(mask).astype(teacher.dtype)
  entropy = -jnp.sum(jax.scipy.special.xlogy(teacher_probs, teacher_probs), -1)
  metrics["teacher_entropy"] = jnp.sum(entropy * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  metrics["batch_center"] = jnp.mean(teacher.reshape(-1, k), axis=0)
  return loss, metrics
