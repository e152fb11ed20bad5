"""BERT's masked-LM corruption as a Grain per-example transform (Devlin et al. 2019, sec. 3.1).

Of the seq_len positions, round(mask_prob * seq_len) (at least one) are chosen uniformly without
replacement for prediction; each chosen token is replaced by [MASK] with probability 0.8, by a
uniformly random non-special token with probability 0.1, and left unchanged with probability
0.1. Output: {'tokens': the corrupted input, 'labels': the original ids, 'mask': float32, 1 at
the chosen positions}. Seeded per element by Grain, so the pipeline is reproducible.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np


@dataclasses.dataclass(frozen=True)
class BertMasking(grain.transforms.RandomMap):
  mask_id: int
  vocab_size: int
  special_ids: tuple[int, ...]  # never drawn as random replacements (pad, eos, mask)
  mask_prob: float = 0.15
  replace_mask: float = 0.8
  replace_random: float = 0.1

  def __post_init__(self):
    if not 0.0 < self.mask_prob <= 1.0:
      raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}.")
    if self.replace_mask + self.replace_random > 1.0:
      raise ValueError("replace_mask + replace_random must be <= 1 (the rest stays unchanged).")

  def random_map(self, element, rng: np.random.Generator):
    labels = np.asarray(element["tokens"], np.int32)
    length = labels.shape[0]
    chosen = rng.choice(length, size=max(1, round(self.mask_prob * length)), replace=False)
    mask = np.zeros(length, np.float32)
    mask[chosen] = 1.0
    u = rng.random(len(chosen))
    allowed = np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids))
    random_tokens = rng.choice(allowed, size=len(chosen))
    tokens = labels.copy()
    tokens[chosen] = np.where(
      u < self.replace_mask,
      self.mask_id,
      np.where(u < self.replace_mask + self.replace_random, random_tokens, labels[chosen]),
    )
    return {"tokens": tokens, "labels": labels, "mask": mask}


@dataclasses.dataclass(frozen=True)
class Tokens(grain.transforms.RandomMap):
  """The packed window as is, int32 (GPT: the loss shifts targets itself)."""

  def random_map(self, element, rng: np.random.Generator):
    del rng
    return {"tokens": np.asarray(element["tokens"], np.int32)}
