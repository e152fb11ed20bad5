"""Linear probe: multinomial logistic regression on frozen, standardized features.

The standard linear evaluation of self-supervised learning (e.g. SimCLR, Chen
et al. 2020, sec. B.5; MAE, He et al. 2022, sec. A.2): the encoder is frozen, a
softmax classifier is fit on its features, and test top-1 is reported. Here the
classifier is fit to convergence with full-batch L-BFGS (`optax.lbfgs`), its L2
penalty is selected on a held-out slice of the training set, and the selected
value is refit on all of train.

The module also holds `validate_eval_inputs`, the input checks shared by the
three protocols (kNN and few-shot import it).
"""

import functools
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

# Default L2 grid: log-spaced, spanning "almost unregularized" to "strong" for
# standardized features and a mean cross-entropy objective. sklearn's
# LogisticRegression(C) corresponds to weight_decay = 1 / (C * num_examples).
DEFAULT_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def validate_eval_inputs(train_x, train_y, test_x, test_y, *, num_classes):
  """Checks the arrays every protocol takes and returns clean copies.

  Args:
    train_x: [N, D] features of the labelled (train) split.
    train_y: [N] integer labels in [0, num_classes).
    test_x: [M, D] features of the evaluation split.
    test_y: [M] integer labels in [0, num_classes), or None when only
      predictions are wanted (then returned as None).
    num_classes: number of classes, an int >= 2.

  Returns:
    (train_x float32, train_y int32, test_x float32, test_y int32) as NumPy.

  Raises:
    ValueError: naming the problem (rank, shape mismatch, dtype, label range,
      non-finite feature values) and how to fix it.
  """
  if (
    isinstance(num_classes, bool)
    or not isinstance(num_classes, (int, np.integer))
    or num_classes < 2
  ):
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
  arrays = {}
  for name, x in (("train_x", train_x), ("test_x", test_x)):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
      raise ValueError(
        f"{name} must be a non-empty 2-D array [examples, dim], "
        f"got shape {x.shape}; flatten features before eval."
      )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
      raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
      rows = np.unique(np.nonzero(bad)[0])
      raise ValueError(
        f"{name} has {int(bad.sum())} NaN/inf values in {rows.size} rows "
        f"(first row {int(rows[0])}); the encoder diverged or the features "
        "were not extracted correctly."
      )
    arrays[name] = x
  if arrays["train_x"].shape[1] != arrays["test_x"].shape[1]:
    raise ValueError(
      f"train_x and test_x have different feature dims "
      f"({arrays['train_x'].shape[1]} vs {arrays['test_x'].shape[1]}); "
      "extract both splits with the same encoder and layer."
    )
  arrays["test_y"] = None
  for name, y, x_name in (("train_y", train_y, "train_x"), ("test_y", test_y, "test_x")):
    if y is None and name == "test_y":
      continue
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != arrays[x_name].shape[0]:
      raise ValueError(
        f"{name} must be 1-D with one label per row of {x_name} "
        f"({arrays[x_name].shape[0]}), got shape {y.shape}."
      )
    if not np.issubdtype(y.dtype, np.integer):
      raise ValueError(
        f"{name} must hold integer class ids, got dtype {y.dtype}; cast with .astype(np.int32)."
      )
    out_of_range = (y < 0) | (y >= num_classes)
    if out_of_range.any():
      raise ValueError(
        f"{name} has {int(out_of_range.sum())} labels outside "
        f"[0, num_classes={num_classes}) (e.g. {int(y[out_of_range][0])}); "
        "pass the dataset's num_classes or remap the labels."
      )
    arrays[name] = y.astype(np.int32, copy=False)
  return (arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"])


def standardize(fit_x, *others):
  """Standardizes features with the mean/std of `fit_x` (float64 statistics).

  Features that are constant on `fit_x` (std exactly 0, e.g. dead ReLU units)
  are set to 0 everywhere instead of divided by ~0: they carry no information
  the classifier could have learnt, and a tiny divisor would blow up the test
  values. Statistics are accumulated in float64 so a constant column has an
  exactly-zero std.

  Returns:
    The standardized float32 versions of `fit_x` and of each array in `others`.
  """
  mean = fit_x.mean(axis=0, dtype=np.float64)
  std = fit_x.std(axis=0, dtype=np.float64)
  inv_std = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
  # Applied in float32: float64 statistics rounded to float32 keep a constant
  # column's mean equal to its value, so it still centres to exactly 0.
  mean, inv_std = mean.astype(np.float32), inv_std.astype(np.float32)
  return tuple((x - mean) * inv_std for x in (fit_x,) + others)


def _softmax_regression_objective(params, x, labels_onehot, example_weight, weight_decay):
  """Weighted mean cross-entropy + (weight_decay / 2) * ||W||_F^2, bias free.

  params: {'w': [C, D], 'b': [C]}; x: [N, D]; labels_onehot: [N, C];
  example_weight: [N] (0 drops an example). Up to a constant factor this is
  sklearn's multinomial LogisticRegression objective with
  C = 1 / (weight_decay * num_examples).
  """
  # W is stored [C, D] (not [D, C]) so that the gradient G^T x comes out as a
  # [C, N] @ [N, D] product, which XLA:CPU runs faster than x^T G (docs/performance_cpu.md).
  logits = jnp.einsum("nd,cd->nc", x, params["w"]) + params["b"]
  cross_entropy = -jnp.sum(labels_onehot * jax.nn.log_softmax(logits), axis=-1)
  data_term = jnp.sum(example_weight * cross_entropy) / jnp.sum(example_weight)
  return data_term + 0.5 * weight_decay * jnp.sum(jnp.square(params["w"]))


def feature_eigenbasis(x):
  """Eigendecomposition (Q, lambda) of the second moment x^T x / n of x: [n, D].

  Only used to precondition L-BFGS, so float32 products suffice; the
  decomposition itself is float64. Eigenvalues are clipped at 0.
  """
  second_moment = (x.T @ x).astype(np.float64) / x.shape[0]
  eigvals, eigvecs = np.linalg.eigh(second_moment)
  return eigvecs.astype(np.float32), np.maximum(eigvals, 0).astype(np.float32)


@jax.jit
def _fit_lbfgs(
  init_params, x, labels_onehot, example_weight, weight_decay, eigvecs, eigvals, max_iters, grad_tol
):
  """Minimises the objective with preconditioned full-batch L-BFGS.

  Preconditioning is a change of variables W = V P with the symmetric
  P = Q diag((lambda / C + wd)^-1/2) Q^T, where Q diag(lambda) Q^T is the
  features' second moment (feature_eigenbasis of the fit examples). The
  Hessian of the objective in W is close to (diag(p) - p p^T) (x) Sigma +
  wd I, which at p uniform is (1 / C) Sigma + wd I per class, so in V it is
  close to the identity: on correlated SSL features this cuts L-BFGS
  iterations several-fold. The minimiser is the same W (a bijective
  reparametrisation of the same objective); only the path changes.

  Stops when ||grad_V||_2 < grad_tol or after max_iters iterations. In V
  coordinates ||grad_V||^2 ~ grad^T H^-1 grad, twice the remaining
  suboptimality, so the rule is scale-free across weight decays. Everything
  but the shapes is traced (weight decay, stopping rule, warm start), so one
  compilation serves the whole sweep and the refit.

  Returns:
    (params in W coordinates, iterations run).
  """
  num_classes = labels_onehot.shape[1]
  scale = jax.lax.rsqrt(eigvals / num_classes + weight_decay)
  precond = (eigvecs * scale) @ eigvecs.T
  precond_inv = (eigvecs / scale) @ eigvecs.T

  def objective(v_params):
    w_params = {"w": v_params["w"] @ precond, "b": v_params["b"]}
    return _softmax_regression_objective(w_params, x, labels_onehot, example_weight, weight_decay)

  solver = optax.lbfgs()
  # The zoom line search stores the value/gradient at the accepted point; reuse
  # them so an iteration whose first trial step is accepted (the usual case
  # for L-BFGS) costs a single forward/backward pass.
  value_and_grad = optax.value_and_grad_from_state(objective)

  def keep_going(carry):
    _, state, iteration = carry
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    # The stored gradient is a placeholder before the first step.
    return (iteration < max_iters) & ((iteration == 0) | (grad_norm >= grad_tol))

  def step(carry):
    v_params, state, iteration = carry
    value, grad = value_and_grad(v_params, state=state)
    updates, state = solver.update(
      grad, state, v_params, value=value, grad=grad, value_fn=objective
    )
    return optax.apply_updates(v_params, updates), state, iteration + 1

  v_init = {"w": init_params["w"] @ precond_inv, "b": init_params["b"]}
  v_params, _, iterations = jax.lax.while_loop(
    keep_going, step, (v_init, solver.init(v_init), jnp.asarray(0))
  )
  return {"w": v_params["w"] @ precond, "b": v_params["b"]}, iterations


@functools.partial(jax.jit, static_argnames="k")
def _top_k_classes(params, x, *, k):
  """[M, k] indices of the k highest-scoring classes, best first."""
  logits = jnp.einsum("md,cd->mc", x, params["w"]) + params["b"]
  return jax.lax.top_k(logits, k)[1]


def _top_k_accuracy(params, x, labels, k):
  predicted = np.asarray(_top_k_classes(params, x, k=k))
  return float(np.mean(np.any(predicted == labels[:, None], axis=1)))


@jax.jit
def _holdout_cross_entropy(params, x, labels):
  """Mean cross-entropy of the classifier on (x, labels)."""
  logits = jnp.einsum("md,cd->mc", x, params["w"]) + params["b"]
  return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def _warn_if_capped(iterations, max_iters, grad_tol, weight_decay):
  if iterations >= max_iters:
    logging.warning(
      "linear_probe: L-BFGS (weight_decay=%g) stopped at max_iters=%d before "
      "||grad_V|| < %g; raise max_iters for a converged probe.",
      weight_decay,
      max_iters,
      grad_tol,
    )


def linear_probe(
  train_x,
  train_y,
  test_x,
  test_y,
  *,
  num_classes,
  weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
  max_iters: int = 1000,
  grad_tol: float = 1e-3,
  holdout_fraction: float = 0.1,
  seed: int = 0,
) -> dict:
  """Linear-probe accuracy of frozen features (softmax regression).

  Protocol:
    1. Split train at random (seeded) into a fit part and a held-out part of
       `holdout_fraction`; standardize with the fit part's mean/std.
    2. For each weight decay, fit multinomial logistic regression on the fit
       part to convergence and score top-1 on the held-out part. The test
       split is never looked at here.
    3. Refit the weight decay with the best held-out top-1 on all of train,
       standardized with all-train statistics, and report its test accuracy.
       Ties in held-out top-1 (common: a few hundred held-out examples move
       in steps of 1/num_holdout) are broken by the lower held-out
       cross-entropy, a continuous score, rather than by grid position.

  Optimizer: full-batch L-BFGS (optax.lbfgs with its zoom line search) rather
  than minibatch SGD/AdamW. The objective is smooth and strictly convex (for
  weight_decay > 0), so L-BFGS reaches its unique minimiser in tens to
  hundreds of full-batch passes: no learning rate, epoch count or batch size
  to tune, the result does not depend on data order, and it is the solver
  sklearn uses for this problem (our tests compare against it). Speed-ups
  that leave the minimiser unchanged: preconditioning by the feature second
  moment (see _fit_lbfgs); the sweep runs from the strongest to the weakest
  weight decay, warm-starting each fit from the previous solution (a
  regularization path); the refit starts from the selected held-out
  solution. Fashion-MNIST scale (60k x 512, 10 classes, 2 CPU cores): about
  5-15 s in all, depending on how well conditioned the features are.

  Args:
    train_x, train_y, test_x, test_y, num_classes: see validate_eval_inputs.
    weight_decays: L2 strengths to sweep; the objective is mean cross-entropy
      + weight_decay / 2 * ||W||^2 (the bias is not penalised).
    max_iters: L-BFGS iteration cap per fit.
    grad_tol: stop when the norm of the preconditioned gradient falls below
      this; its square is about twice the remaining suboptimality of the
      (mean cross-entropy) objective, so 1e-3 means ~5e-7 from the optimum,
      well below what moves test accuracy.
    holdout_fraction: share of train held out for selecting weight decay.
    seed: seeds the holdout split (the only randomness).

  Returns:
    {'top1': test top-1, 'top5' (if num_classes >= 5), 'val_top1': held-out
    top-1 of the selected weight decay, 'weight_decay': the selected value,
    'iterations': L-BFGS iterations of the refit} as Python floats.
  """
  train_x, train_y, test_x, test_y = validate_eval_inputs(
    train_x, train_y, test_x, test_y, num_classes=num_classes
  )
  weight_decays = sorted((float(wd) for wd in weight_decays), reverse=True)
  if not weight_decays or weight_decays[-1] <= 0:
    raise ValueError(
      f"weight_decays must be a non-empty list of positive "
      f"values (the problem is not strictly convex without "
      f"L2), got {weight_decays}."
    )
  num_train = train_x.shape[0]
  num_holdout = int(round(holdout_fraction * num_train))
  if max_iters < 1 or not grad_tol > 0:
    raise ValueError(f"Need max_iters >= 1 and grad_tol > 0, got {max_iters} and {grad_tol}.")
  if not 0 < holdout_fraction < 1 or not 0 < num_holdout < num_train:
    raise ValueError(
      f"holdout_fraction={holdout_fraction} of {num_train} train examples "
      f"leaves {num_holdout} held out; pick a value in (0, 1) that holds "
      "out at least one example and keeps at least one for fitting."
    )

  permutation = np.random.default_rng(seed).permutation(num_train)
  holdout_idx = np.sort(permutation[:num_holdout])
  is_fit = np.ones(num_train, np.float32)
  is_fit[holdout_idx] = 0.0
  labels_onehot = jax.nn.one_hot(train_y, num_classes, dtype=jnp.float32)
  stop = dict(
    max_iters=jnp.asarray(max_iters, jnp.int32), grad_tol=jnp.asarray(grad_tol, jnp.float32)
  )

  # Sweep: every example stays in the array and the held-out ones get weight
  # 0, so sweep and refit share one compiled shape.
  train_x_by_fit_stats = standardize(train_x[is_fit > 0], train_x)[1]
  x_fit = jnp.asarray(train_x_by_fit_stats)
  x_holdout = jnp.asarray(train_x_by_fit_stats[holdout_idx])
  fit_basis = feature_eigenbasis(train_x_by_fit_stats[is_fit > 0])
  params = {
    "w": jnp.zeros((num_classes, train_x.shape[1]), jnp.float32),
    "b": jnp.zeros((num_classes,), jnp.float32),
  }
  holdout_y = train_y[holdout_idx]
  best = None
  for weight_decay in weight_decays:
    params, iterations = _fit_lbfgs(
      params,
      x_fit,
      labels_onehot,
      jnp.asarray(is_fit),
      jnp.asarray(weight_decay, jnp.float32),
      *fit_basis,
      **stop,
    )
    _warn_if_capped(int(iterations), max_iters, grad_tol, weight_decay)
    # Sort key: higher top-1 first, then lower cross-entropy.
    score = (
      _top_k_accuracy(params, x_holdout, holdout_y, 1),
      -float(_holdout_cross_entropy(params, x_holdout, holdout_y)),
    )
    if best is None or score > best[0]:
      best = (score, weight_decay, params)
  (val_top1, _), weight_decay, params = best

  # Refit on all of train, standardized with all-train statistics.
  x_train, x_test = standardize(train_x, test_x)
  train_basis = feature_eigenbasis(x_train)
  x_train, x_test = jnp.asarray(x_train), jnp.asarray(x_test)
  params, iterations = _fit_lbfgs(
    params,
    x_train,
    labels_onehot,
    jnp.ones(num_train, jnp.float32),
    jnp.asarray(weight_decay, jnp.float32),
    *train_basis,
    **stop,
  )
  iterations = int(iterations)
  _warn_if_capped(iterations, max_iters, grad_tol, weight_decay)

  metrics = {
    "top1": _top_k_accuracy(params, x_test, test_y, 1),
    "val_top1": val_top1,
    "weight_decay": weight_decay,
    "iterations": float(iterations),
  }
  if num_classes >= 5:
    metrics["top5"] = _top_k_accuracy(params, x_test, test_y, 5)
  return metrics
