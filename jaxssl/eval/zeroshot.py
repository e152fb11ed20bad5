"""Image-text evaluation: zero-shot classification and image<->text retrieval recall@k.

Zero-shot (CLIP, Radford et al. 2021, sec. 3.1.4): each class is represented by the text
embedding of prompts built from its name; with several templates the normalised prompt
embeddings are averaged and renormalised (prompt ensembling, sec. 3.1.4); an image is
assigned the class whose embedding has the highest cosine similarity. No image label is used
to build the classifier.

Retrieval (CLIP sec. 3.1.5 / table 13): the test split's images and their own captions; for
image i the correct text is text i (and vice versa); recall@k is the fraction of queries whose
correct item is among the k most similar. Ties count against the query (the correct item must
beat every item ranked above it strictly), so a constant similarity scores 0, not 1.

The pure functions take NumPy arrays; `evaluate_image_text` runs a trained two-tower method
(jaxssl/methods/image_text.py) over an eval split for the eval job (jaxssl/evaluate.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from jaxssl import parallel
from jaxssl.data import augment
from jaxssl.data import emoji as emoji_data
from jaxssl.data import glyphs as glyphs_data
from jaxssl.data import image_text as image_text_data
from jaxssl.data import pipeline

# Eval-job protocols this module answers (they need a method with a text tower).
PROTOCOLS = ("zeroshot", "retrieval")
# The prompt words of each label of the embedded image-text sets.
_CLASS_NAMES = {
  image_text_data.TUXPAINT_INFO["name"]: image_text_data.TUXPAINT_CLASS_NAMES,
  emoji_data.EMOJI_INFO["name"]: emoji_data.EMOJI_CLASS_NAMES,
  glyphs_data.DEJAVU_GLYPHS_INFO["name"]: glyphs_data.GLYPH_CLASS_NAMES,
}


def l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
  """Recall@k both ways for a square similarity [N images, N texts] matched on the diagonal.

  Returns {'img_to_txt_top{k}', 'txt_to_img_top{k}'}: recall@k as a fraction (the eval job's
  'topk' naming). The rank of the correct item is the number of other items scoring at least
  as high (a tie is not a hit), so rank < k means a hit.
  """
  similarity = np.asarray(similarity, np.float64)
  if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
    raise ValueError(
      f"similarity must be square [N, N] (image i matches text i); got {similarity.shape}."
    )
  out = {}
  for name, sim in (("img_to_txt", similarity), ("txt_to_img", similarity.T)):
    correct = np.diagonal(sim)[:, None]
    rank = np.sum(sim >= correct, axis=1) - 1  # items at least as good, minus itself
    for k in ks:
      out[f"{name}_top{k}"] = float(np.mean(rank < k))
  return out


def class_embeddings(
  embed_texts: Callable[[Sequence[str]], np.ndarray],
  class_names: Sequence[str],
  templates: Sequence[str],
) -> np.ndarray:
  """[C, D] unit-norm class embeddings: mean over templates of the normalised prompt
  embeddings, renormalised (CLIP's prompt ensembling). `templates` contain '{}'."""
  if not templates or any("{}" not in t for t in templates):
    raise ValueError(
      f"templates must be a non-empty list of strings containing '{{}}' (the "
      f"class name); got {list(templates)}."
    )
  prompts = [t.format(name) for name in class_names for t in templates]
  emb = l2_normalize(embed_texts(prompts)).reshape(len(class_names), len(templates), -1)
  return l2_normalize(emb.mean(axis=1))


def zeroshot_accuracy(
  image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
  """Top-1 accuracy of argmax_c cos(image, class c), its class-balanced form (mean over the
  classes present of each class's accuracy, CLIP's "mean per class"), and the chance levels to
  compare with: uniform guessing (1 / C, also the balanced chance of any constant guess) and
  always the most frequent class. Fractions."""
  logits = l2_normalize(image_emb) @ l2_normalize(class_emb).T
  labels = np.asarray(labels)
  pred = np.argmax(logits, axis=1)
  counts = np.bincount(labels, minlength=class_emb.shape[0])
  present = np.unique(labels)
  per_class = [np.mean(pred[labels == c] == c) for c in present]
  return {
    "top1": float(np.mean(pred == labels)),
    "balanced_top1": float(np.mean(per_class)),
    "chance_uniform": 1.0 / class_emb.shape[0],
    "chance_majority": float(counts.max() / len(labels)),
  }


def class_names(dataset: str, data_dir: str) -> tuple[str, ...]:
  """The words naming each label of `dataset`, for prompts: the image-text sets' own table,
  else the TFDS ClassLabel names of a prepared catalog dataset with '_' read as a space."""
  if dataset in _CLASS_NAMES:
    return _CLASS_NAMES[dataset]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  label = tfds.builder(dataset, data_dir=data_dir).info.features["label"]
  return tuple(n.replace("_", " ") for n in label.names)


class _Embedder:
  """Jitted, sharded forwards of a two-tower method in its shared embedding space: images
  (eval transform) and texts (tokenised like training), in padded fixed-size batches."""

  def __init__(self, encoder, variables, batch_size: int):
    self.encoder, self.variables = encoder, variables
    mesh, rules = encoder.mesh, encoder.rules
    divisor = parallel.batch_divisor(mesh, rules)
    self.batch_size = max(divisor, batch_size // divisor * divisor)
    self.sharding = parallel.batch_sharding(mesh, rules)
    method = encoder.method

    def wrap(fn):
      def run(variables, x):
        with nn.logical_axis_rules(rules):
          return fn(variables["params"], variables["aux"], x)

      return jax.jit(
        run,
        in_shardings=(encoder.shardings, self.sharding),
        out_shardings=parallel.replicated(mesh),
        compiler_options=dict(encoder.ops.compiler_options()),
      )

    self._images = wrap(method.embed_images)
    self._texts = wrap(method.embed_texts)

  def _run(self, fn, examples: Sequence[Any], key: str) -> np.ndarray:
    outs = []
    with jax.set_mesh(self.encoder.mesh):
      for local in pipeline.make_eval_batches(examples, lambda e: e, batch_size=self.batch_size):
        x = pipeline.global_batch(local[key], self.sharding)
        valid = np.asarray(local["valid"], bool)  # single-process eval: local == global
        outs.append(np.asarray(jax.device_get(fn(self.variables, x)), np.float32)[valid])
    return np.concatenate(outs)

  def texts(self, texts: Sequence[str]) -> np.ndarray:
    tokenize = self.encoder.method.tokenize
    return self._run(self._texts, [{"tokens": tokenize(t)} for t in texts], "tokens")

  def images(self, source, info, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    transform = augment.Deterministic(mean=info.mean, std=info.std, output_size=image_size)
    examples = [transform.map(source[i]) for i in range(len(source))]
    labels = np.array([e["label"] for e in examples], np.int32)
    return self._run(self._images, examples, "image"), labels


def evaluate_image_text(
  encoder,
  variables,
  source,
  info,
  *,
  class_names: Sequence[str],
  protocols: Sequence[str],
  templates: Sequence[str],
  ks: Sequence[int],
  batch_size: int,
) -> dict[str, dict[str, float]]:
  """Runs the requested image-text `protocols` on `source` (an eval split of an image-caption
  dataset) with `encoder` (a jaxssl.eval.features.Encoder of a two-tower run).

  The eval job runs on one process (it reads the whole split on the host); captions are
  composed exactly as in training (`method.caption_text`).
  """
  if jax.process_count() > 1:
    raise ValueError(
      "Image-text eval protocols run on a single process; launch the eval job on one host."
    )
  method = encoder.method
  if not hasattr(method, "embed_texts"):
    raise ValueError(
      f"Protocols {list(protocols)} need an image-text method with a text "
      f"tower (clip, siglip); this run's method is {encoder.config.method!r}."
    )
  embedder = _Embedder(encoder, variables, batch_size)
  image_emb, labels = embedder.images(source, info, encoder.config.data.image_size)
  results = {}
  if "zeroshot" in protocols:
    class_emb = class_embeddings(embedder.texts, class_names, templates)
    results["zeroshot"] = zeroshot_accuracy(image_emb, class_emb, labels)
  if "retrieval" in protocols:
    captions = [method.caption_text(source[i]) for i in range(len(source))]
    text_emb = embedder.texts(captions)
    results["retrieval"] = recall_at_k(l2_normalize(image_emb) @ l2_normalize(text_emb).T, ks)
  return results
