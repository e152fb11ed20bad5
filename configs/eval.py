r"""The eval job's config: which data, which protocols, their hyperparameters.

  python -m jaxssl.evaluate --workdir=/tmp/simclr --config=configs/eval.py

Presets: `default` (all three protocols, random-init baseline), `fast` (kNN + few-shot only,
used while watching a run on a small machine), `test` (tiny, for the test suite).
"""

import ml_collections


# Preset arguments tests/test_config.py builds (every one must resolve and lock).
PRESETS = ("default", "fast", "test")


def get_config(arg: str = "default"):
  c = ml_collections.ConfigDict()
  c.dataset = ""  # empty: the training run's config.data.name
  c.data_dir = ""  # empty: the training run's data dir
  c.train_split = "train"
  c.test_split = "test"
  c.batch_size = 512
  # zeroshot / retrieval run only for image-text methods (clip, siglip); others skip them.
  c.protocols = ("linear", "knn", "fewshot", "zeroshot", "retrieval")
  c.random_init = True  # also evaluate the run's step-0 encoder: the baseline
  c.poll_seconds = 10.0  # --watch: how often to look for new checkpoints
  c.linear = dict(weight_decays=(1e-5, 1e-4, 1e-3, 1e-2), holdout_fraction=0.1, seed=0)
  c.knn = dict(k=20, temperature=0.07)
  c.fewshot = dict(shots=(1, 5, 10, 25), seeds=(0, 1, 2), l2_reg=2.0**10)
  # Class prompts (CLIP's prompt ensembling over templates; '{}' is the class name) and
  # retrieval recall@k. The bare name: image-text training texts here start with tags.
  c.zeroshot = dict(templates=("{}",), ks=(1, 5))
  if arg == "fast":
    c.protocols = ("knn", "fewshot", "zeroshot", "retrieval")
  elif arg == "test":
    c.batch_size = 64
    c.linear = dict(weight_decays=(1e-4, 1e-2), holdout_fraction=0.2, seed=0)
    c.fewshot = dict(shots=(1, 5), seeds=(0, 1), l2_reg=2.0**10)
    c.poll_seconds = 0.5
  elif arg != "default":
    raise ValueError(f"Unknown eval preset {arg!r}; choose default, fast or test.")
  c.lock()
  return c
