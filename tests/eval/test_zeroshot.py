"""Zero-shot classification and retrieval recall@k against NumPy recomputation."""

import numpy as np
import pytest

from jaxssl.eval import zeroshot


def _recall_by_sorting(sim, k):
  """Reference: a query hits when its match is among the first k of a stable descending sort
  in which every other item tied with the match is placed before it."""
  hits = []
  for i, row in enumerate(sim):
    others = np.delete(np.arange(len(row)), i)
    order = sorted(others, key=lambda j: -row[j])
    better = [j for j in order if row[j] >= row[i]]
    hits.append(len(better) < k)
  return float(np.mean(hits))


def test_recall_on_a_hand_made_matrix():
  # Image 0: its text ranks 1st. Image 1: 2nd (text 0 scores higher). Image 2: 3rd.
  sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.2], [0.7, 0.6, 0.3]])
  r = zeroshot.recall_at_k(sim, ks=(1, 2, 3))
  assert r["img_to_txt_top1"] == pytest.approx(1 / 3)
  assert r["img_to_txt_top2"] == pytest.approx(2 / 3)
  assert r["img_to_txt_top3"] == pytest.approx(1.0)
  # Text -> image: column j, match at row j. Text 0: 0.9 best (hit@1); text 1: 0.5 < 0.6
  # (rank 2); text 2: 0.3 best in its column (hit@1).
  assert r["txt_to_img_top1"] == pytest.approx(2 / 3)
  assert r["txt_to_img_top2"] == pytest.approx(1.0)


def test_ties_are_not_hits_and_random_matrices_match_the_sorting_reference():
  r = zeroshot.recall_at_k(np.ones((5, 5)), ks=(1, 4, 5))
  assert r["img_to_txt_top1"] == 0.0 and r["img_to_txt_top4"] == 0.0
  assert r["img_to_txt_top5"] == 1.0
  rng = np.random.default_rng(0)
  for _ in range(5):
    sim = np.round(rng.normal(size=(12, 12)), 1)  # rounding makes ties
    r = zeroshot.recall_at_k(sim, ks=(1, 5))
    for k in (1, 5):
      assert r[f"img_to_txt_top{k}"] == pytest.approx(_recall_by_sorting(sim, k))
      assert r[f"txt_to_img_top{k}"] == pytest.approx(_recall_by_sorting(sim.T, k))
  with pytest.raises(ValueError, match="square"):
    zeroshot.recall_at_k(np.ones((3, 4)))


def test_class_embeddings_average_normalised_prompts():
  rng = np.random.default_rng(1)
  table = {}

  def embed(prompts):
    for p in prompts:
      table.setdefault(p, rng.normal(size=6) * rng.uniform(0.1, 10))
    return np.stack([table[p] for p in prompts])

  names, templates = ["cat", "dog"], ["a {}.", "the {} here"]
  emb = zeroshot.class_embeddings(embed, names, templates)
  for c, name in enumerate(names):
    units = [table[t.format(name)] / np.linalg.norm(table[t.format(name)]) for t in templates]
    mean = np.mean(units, axis=0)
    np.testing.assert_allclose(emb[c], mean / np.linalg.norm(mean), rtol=1e-10)
  with pytest.raises(ValueError, match="containing '{}'"):
    zeroshot.class_embeddings(embed, names, ["no slot"])


def test_zeroshot_accuracy_is_cosine_argmax_and_reports_chance():
  rng = np.random.default_rng(2)
  class_emb = rng.normal(size=(4, 8))
  labels = np.array([0, 0, 0, 1, 2, 3, 3, 1])
  # Images near their class embedding, scaled arbitrarily (cosine ignores the norm); two are
  # moved onto a wrong class.
  images = class_emb[labels] * rng.uniform(0.5, 5, size=(8, 1)) + 0.01 * rng.normal(size=(8, 8))
  images[1] = 3 * class_emb[2]
  images[6] = 0.2 * class_emb[0]
  out = zeroshot.zeroshot_accuracy(images, class_emb, labels)
  cos = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ (
    class_emb / np.linalg.norm(class_emb, axis=1, keepdims=True)
  ).T
  assert out["top1"] == pytest.approx(np.mean(cos.argmax(1) == labels))
  assert out["top1"] == pytest.approx(0.75)
  # Per class: class 0 has 3 images (image 1 wrong), class 1 2 (right), 2 1 (right), 3 2
  # (image 6 wrong): mean of 2/3, 1, 1, 1/2.
  assert out["balanced_top1"] == pytest.approx(np.mean([2 / 3, 1, 1, 1 / 2]))
  assert out["chance_uniform"] == 0.25
  assert out["chance_majority"] == pytest.approx(3 / 8)
