"""Pixel reconstruction: the MAE loss and the patchify / unpatchify it uses.

Patch layout follows MAE (He et al. 2022, `models_mae.py`) for NHWC images:
patches in row-major order over the (H/p, W/p) grid, each flattened as
(row within patch, column within patch, channel), so P = p * p * C.
"""

import jax.numpy as jnp


def _upcast(x):
  """Casts to float32, or keeps float64 (used by the float64 tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def patchify(images, patch):
  """Splits images into flattened non-overlapping square patches.

  Args:
    images: [B, H, W, C], H and W divisible by `patch`.
    patch: patch side p.

  Returns:
    [B, (H/p) * (W/p), p * p * C] patches, row-major over the patch grid.
  """
  if images.ndim != 4:
    raise ValueError(
      f"images must be [batch, height, width, channels]; got {images.shape}. "
      "Add a channel axis for grayscale images."
    )
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(
      f"image size {h}x{w} is not divisible by patch size {patch}; resize or "
      "crop the images, or choose a patch size that divides both sides."
    )
  gh, gw = h // patch, w // patch
  x = images.reshape(b, gh, patch, gw, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, gh, gw, p, p, C]
  return x.reshape(b, gh * gw, patch * patch * c)


def unpatchify(patches, patch, *, grid=None):
  """Inverse of `patchify`.

  Args:
    patches: [B, N, p * p * C].
    patch: patch side p.
    grid: (H/p, W/p); defaults to a square grid sqrt(N) x sqrt(N).

  Returns:
    [B, H, W, C] images.
  """
  if patches.ndim != 3:
    raise ValueError(f"patches must be [batch, n_patches, patch_dim]; got {patches.shape}.")
  b, n, dim = patches.shape
  if grid is None:
    side = int(round(n**0.5))
    if side * side != n:
      raise ValueError(f"{n} patches do not form a square grid; pass grid=(rows, cols).")
    grid = (side, side)
  gh, gw = grid
  c = dim // (patch * patch)
  if gh * gw != n or c * patch * patch != dim:
    raise ValueError(
      f"patches {patches.shape} do not match grid {grid} and patch size "
      f"{patch}: need N = rows * cols and patch_dim = patch**2 * channels."
    )
  x = patches.reshape(b, gh, gw, patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, gh, p, gw, p, C]
  return x.reshape(b, gh * patch, gw * patch, c)


def mae(pred, target, mask, *, norm_pix=True, eps=1e-6):
  """Masked autoencoder reconstruction loss (He et al. 2022, sec. 3).

  With norm_pix, each target patch is normalised by its own pixel mean and
  variance (unbiased, as torch's `var` in the official code):
    t_hat = (t - mean(t)) / sqrt(var(t) + eps),
  then
    L = sum_n m_n * mean_P (pred_n - t_hat_n)^2 / sum_n m_n,
  the MSE per patch averaged over the removed patches of the whole batch only.
  (If a batch has no masked patch the denominator is clamped at 1 and the loss
  is 0, instead of NaN.)

  Args:
    pred: [B, N, P] decoder predictions for every patch.
    target: [B, N, P] `patchify(images, p)` pixels (no gradient needed).
    mask: [B, N], 1 / True where the patch was removed (masked) for the encoder.
    norm_pix: normalise target pixels per patch (True, the paper's default
      "with norm pix" setting used for the reported results).
    eps: variance epsilon (1e-6).

  Returns:
    (loss, metrics): 'mse_visible' (the same error on the visible patches, a
    diagnostic that is not trained on) and 'mask_ratio'.
  """
  pred, target = _upcast(pred), _upcast(target)
  mask = jnp.asarray(mask)
  if pred.ndim != 3 or pred.shape != target.shape:
    raise ValueError(
      f"pred and target must both be [batch, n_patches, patch_dim]; got "
      f"{pred.shape} and {target.shape}. Patchify the images with the "
      "decoder's patch size."
    )
  if mask.shape != pred.shape[:2]:
    raise ValueError(f"mask must be [batch, n_patches] = {pred.shape[:2]}; got {mask.shape}.")
  if norm_pix:
    if target.shape[-1] < 2:
      raise ValueError(
        "norm_pix needs at least 2 pixels per patch; set norm_pix=False for 1-pixel patches."
      )
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + eps)
  per_patch = jnp.mean(jnp.square(pred - target), axis=-1)  # [B, N]
  removed = mask.astype(per_patch.dtype)
  visible = 1.0 - removed
  loss = jnp.sum(per_patch * removed) / jnp.maximum(jnp.sum(removed), 1.0)
  metrics = {
    "mse_visible": jnp.sum(per_patch * visible) / jnp.maximum(jnp.sum(visible), 1.0),
    "mask_ratio": jnp.mean(removed),
  }
  return loss, metrics
