"""Weight import/export between timm / official PyTorch ViT checkpoints and our ViT.

Covers the layout that timm's `VisionTransformer` and the official DINO (Caron et al. 2021),
DINOv2 (Oquab et al. 2023) and MAE (He et al. 2022) releases share: `patch_embed.proj`,
`cls_token`, `pos_embed` [1, 1 + N, D] (the [cls] slot included), pre-LN blocks with a fused
`attn.qkv` Linear, `attn.proj`, `mlp.fc1`/`fc2`, optional LayerScale `ls1.gamma`/`ls2.gamma`
(DINOv2), and the final `norm`. Works on NumPy arrays: torch tensors convert through
`np.asarray`, so torch is not a dependency of this module.

Exact re-parametrisations (the imported model computes the same function, checked against timm
to 1e-4 in tests/models/test_timm_convert.py):
  * timm adds pos_embed[0] to the [cls] token; our ViT adds no position to [cls], so the import
    folds it in: cls = cls_token + pos_embed[:, 0].
  * The key bias of the fused qkv adds q.b_k to all logits of a query, which softmax ignores;
    our attention has no key bias, so the import drops it.
  * LayerScale gamma * (W x + b) is folded into the preceding Linear (attn.proj, mlp.fc2).
Export writes the same function in the canonical form: cls position slot and key bias zero,
LayerScale gamma one (when `layer_scale=True`). A state dict already in canonical form round
trips bit for bit; any other gives the same outputs.

Checkpoints use the exact (erf) GELU and [cls] tokens: build the encoder from
`vit_config_from_timm`, which sets `gelu_approximate=False`, `pool='cls'`, `posemb='learn'`.
Not covered (ValueError): register tokens (DINOv2-reg), SwiGLU MLPs (DINOv2 giant), `fc_norm`
heads of fine-tuned average-pool models, models without a [cls] token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax.core import meta

# Keys a pretraining checkpoint carries that the encoder does not use: classifier head,
# DINOv2's and MAE's mask token, MAE's decoder.
_IGNORED = re.compile(r"^(head\.|mask_token$|decoder_|decoder\.)")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _np(x) -> np.ndarray:
  if hasattr(x, "detach"):  # torch.Tensor, without importing torch
    x = x.detach().cpu()
  return np.asarray(x, dtype=np.float32)


def _check_keys(state_dict: Mapping[str, Any]) -> int:
  """Validates the layout; returns the number of blocks."""
  unsupported = [
    k
    for k in state_dict
    if k.startswith(("reg_token", "register_tokens", "fc_norm")) or ".w12." in k
  ]
  if unsupported:
    raise ValueError(
      f"Unsupported checkpoint keys {unsupported[:4]}: register tokens, SwiGLU "
      "MLPs and fc_norm heads have no counterpart in jaxssl.models.ViT."
    )
  for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"):
    if key not in state_dict:
      raise ValueError(
        f"State dict lacks {key!r}: expected the timm/DINO/DINOv2/MAE ViT "
        'layout with a [cls] token and a final norm (strip a "module." or '
        '"backbone." prefix first).'
      )
  blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k))}
  depth = max(blocks) + 1 if blocks else 0
  if sorted(blocks) != list(range(depth)) or not depth:
    raise ValueError(f"Expected blocks.0 .. blocks.N-1 in the state dict, got {sorted(blocks)}.")
  return depth


def vit_config_from_timm(
  state_dict: Mapping[str, Any], *, num_heads: int, grid: tuple[int, int] | None = None
) -> dict[str, Any]:
  """The `config.model` dict (for `models.build_encoder`) of the ViT a state dict holds.

  num_heads is not recoverable from the weights (the fused qkv hides it): give the model's
  (ViT-S 6, ViT-B 12, ViT-L 16; DINOv2 ViT-S/14 6). grid: the patch grid of pos_embed; None
  assumes a square grid.
  """
  depth = _check_keys(state_dict)
  width, _, patch_h, patch_w = _np(state_dict["patch_embed.proj.weight"]).shape
  num_positions = _np(state_dict["pos_embed"]).shape[1] - 1
  if grid is None:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
      raise ValueError(
        f"pos_embed holds {num_positions} patch positions, not a square grid: "
        "pass grid=(rows, cols)."
      )
    grid = (side, side)
  if grid[0] * grid[1] != num_positions:
    raise ValueError(f"grid={grid} does not match the {num_positions} positions of pos_embed.")
  if width % num_heads:
    raise ValueError(f"width {width} is not divisible by num_heads={num_heads}.")
  return dict(
    name="vit",
    width=int(width),
    depth=depth,
    mlp_dim=int(_np(state_dict["blocks.0.mlp.fc1.weight"]).shape[0]),
    num_heads=num_heads,
    patch_size=(int(patch_h), int(patch_w)),
    pool="cls",
    posemb="learn",
    posemb_grid=tuple(int(g) for g in grid),
    gelu_approximate=False,
  )


def _layer_norm(state_dict, name):
  return {"scale": _np(state_dict[f"{name}.weight"]), "bias": _np(state_dict[f"{name}.bias"])}


def _linear(state_dict, name, gamma=None):
  """torch Linear (y = x W^T + b) as a (kernel [in, out], bias [out]) pair, LayerScale folded."""
  kernel, bias = _np(state_dict[f"{name}.weight"]).T, _np(state_dict[f"{name}.bias"])
  if gamma is not None:
    kernel, bias = kernel * gamma[None, :], bias * gamma
  return kernel, bias


def from_timm(
  state_dict: Mapping[str, Any], *, num_heads: int, grid: tuple[int, int] | None = None
) -> dict[str, Any]:
  """Converts a timm/DINO/DINOv2/MAE ViT state dict into params of our ViT (float32 NumPy).

  Build the module with `models.build_encoder(vit_config_from_timm(sd, num_heads=...))` and
  apply it with {'params': from_timm(sd, num_heads=...)}. Images are NHWC here, NCHW in torch.
  """
  config = vit_config_from_timm(state_dict, num_heads=num_heads, grid=grid)
  unknown = sorted(
    k
    for k in state_dict
    if not _IGNORED.match(k)
    and k not in _known_keys(config["depth"], "blocks.0.ls1.gamma" in state_dict)
  )
  if unknown:
    raise ValueError(
      f"Unrecognised keys {unknown[:6]}: not the timm ViT layout this converter "
      "handles (see the module docstring)."
    )
  width, heads = config["width"], config["num_heads"]
  head_dim = width // heads
  pos_embed = _np(state_dict["pos_embed"])[0]
  params = {
    "embedding": {
      "kernel": _np(state_dict["patch_embed.proj.weight"]).transpose(2, 3, 1, 0),
      "bias": _np(state_dict["patch_embed.proj.bias"]),
    },
    "cls": _np(state_dict["cls_token"]) + pos_embed[None, :1],
    "pos_embedding": pos_embed[1:].reshape(*config["posemb_grid"], width),
    "encoder_norm": _layer_norm(state_dict, "norm"),
  }
  for i in range(config["depth"]):
    b = f"blocks.{i}"
    ls1, ls2 = (
      (_np(state_dict[f"{b}.ls1.gamma"]), _np(state_dict[f"{b}.ls2.gamma"]))
      if f"{b}.ls1.gamma" in state_dict
      else (None, None)
    )
    # qkv output rows are ordered (q|k|v, head, head_dim), as timm's reshape(B, N, 3, H, K).
    qkv_kernel, qkv_bias = _linear(state_dict, f"{b}.attn.qkv")
    qkv_kernel = qkv_kernel.reshape(width, 3, heads, head_dim)
    qkv_bias = qkv_bias.reshape(3, heads, head_dim)
    proj_kernel, proj_bias = _linear(state_dict, f"{b}.attn.proj", ls1)
    fc1_kernel, fc1_bias = _linear(state_dict, f"{b}.mlp.fc1")
    fc2_kernel, fc2_bias = _linear(state_dict, f"{b}.mlp.fc2", ls2)
    params[f"block_{i}"] = {
      "LayerNorm_0": _layer_norm(state_dict, f"{b}.norm1"),
      "SelfAttention_0": {
        "query_kernel": qkv_kernel[:, 0],
        "query_bias": qkv_bias[0],
        "key_kernel": qkv_kernel[:, 1],  # the key bias is dropped: softmax ignores it
        "value_kernel": qkv_kernel[:, 2],
        "value_bias": qkv_bias[2],
        # proj's input index is (head, head_dim) flattened.
        "out_kernel": proj_kernel.reshape(heads, head_dim, width),
        "out_bias": proj_bias,
      },
      "LayerNorm_1": _layer_norm(state_dict, f"{b}.norm2"),
      "MlpBlock_0": {
        "Dense_0": {"kernel": fc1_kernel, "bias": fc1_bias},
        "Dense_1": {"kernel": fc2_kernel, "bias": fc2_bias},
      },
    }
  return params


def _known_keys(depth: int, layer_scale: bool) -> set[str]:
  keys = {
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "norm.weight",
    "norm.bias",
  }
  for i in range(depth):
    for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
      keys |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    if layer_scale:
      keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
  return keys


def to_timm(params: Mapping[str, Any], *, layer_scale: bool = False) -> dict[str, np.ndarray]:
  """Exports our ViT params (pool='cls', posemb='learn') to a timm ViT state dict (NumPy).

  Load with `model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` into a
  timm VisionTransformer of the same shape with num_classes=0 (and init_values set when
  layer_scale=True, which writes ls1/ls2 gamma = 1 for the DINOv2 layout). The [cls] position
  slot and the key bias are written as zeros (see the module docstring).
  """
  if "cls" not in params or "pos_embedding" not in params:
    raise ValueError(
      "to_timm needs a ViT with pool='cls' and posemb='learn' (params 'cls' and "
      "'pos_embedding'); timm's layout has both."
    )
  p = meta.unbox(params)  # params straight from init carry logical-axis boxes
  grid_h, grid_w, width = np.shape(p["pos_embedding"])
  depth = sum(1 for k in p if k.startswith("block_"))
  sd = {
    "cls_token": _np(p["cls"]),
    "pos_embed": np.concatenate(
      [np.zeros((1, width), np.float32), _np(p["pos_embedding"]).reshape(grid_h * grid_w, width)]
    )[None],
    "patch_embed.proj.weight": _np(p["embedding"]["kernel"]).transpose(3, 2, 0, 1),
    "patch_embed.proj.bias": _np(p["embedding"]["bias"]),
  }
  for i in range(depth):
    block, b = p[f"block_{i}"], f"blocks.{i}"
    attn, mlp = block["SelfAttention_0"], block["MlpBlock_0"]
    heads, head_dim = np.shape(attn["query_bias"])
    qkv_kernel = np.stack([_np(attn[f"{n}_kernel"]) for n in ("query", "key", "value")], axis=1)
    qkv_bias = np.stack(
      [_np(attn["query_bias"]), np.zeros((heads, head_dim), np.float32), _np(attn["value_bias"])]
    )
    sd.update(
      {
        f"{b}.norm1.weight": _np(block["LayerNorm_0"]["scale"]),
        f"{b}.norm1.bias": _np(block["LayerNorm_0"]["bias"]),
        f"{b}.attn.qkv.weight": qkv_kernel.reshape(width, 3 * width).T,
        f"{b}.attn.qkv.bias": qkv_bias.reshape(3 * width),
        f"{b}.attn.proj.weight": _np(attn["out_kernel"]).reshape(width, width).T,
        f"{b}.attn.proj.bias": _np(attn["out_bias"]),
        f"{b}.norm2.weight": _np(block["LayerNorm_1"]["scale"]),
        f"{b}.norm2.bias": _np(block["LayerNorm_1"]["bias"]),
        f"{b}.mlp.fc1.weight": _np(mlp["Dense_0"]["kernel"]).T,
        f"{b}.mlp.fc1.bias": _np(mlp["Dense_0"]["bias"]),
        f"{b}.mlp.fc2.weight": _np(mlp["Dense_1"]["kernel"]).T,
        f"{b}.mlp.fc2.bias": _np(mlp["Dense_1"]["bias"]),
      }
    )
    if layer_scale:
      sd[f"{b}.ls1.gamma"] = np.ones(width, np.float32)
      sd[f"{b}.ls2.gamma"] = np.ones(width, np.float32)
  sd["norm.weight"] = _np(p["encoder_norm"]["scale"])
  sd["norm.bias"] = _np(p["encoder_norm"]["bias"])
  return {k: np.ascontiguousarray(v) for k, v in sd.items()}
