r"""BERT masked language modelling (Devlin et al. 2019) on packed text windows.

  python -m jaxssl.train --config=configs/mlm.py:shakespeare --workdir=/tmp/mlm

Presets:
  shakespeare  The CPU benchmark: byte-level Shakespeare, 128-byte windows, 4 blocks x 128.
  bert_base    BERT-base for pods (sec. 3.1 and appendix A.2): 12 x 768, 12 heads, 512 tokens,
               batch 256, AdamW lr 1e-4 (wd 0.01, b2 0.999), 10k warmup, 1M steps, global-norm
               clip 1.0, dropout 0.1, on the local Python-docs + BPE-32k corpus. Not yet BERT's:
               the linear decay (cosine here), Adam eps 1e-6 (1e-8 here).
  test         Tiny and fast: used by the test suite (pydoc_topics, bytes, 32 tokens).
Every preset has BERT's MLM head transform, LayerNorm(GELU(Dense(h))), before the tied decoder
(google-research/bert `run_pretraining.py` l.245-264).
"""

import ml_collections

from jaxssl import config_lib

PRESETS = ("shakespeare", "bert_base", "test")


def get_config(arg: str = "shakespeare"):
  preset = arg
  c = config_lib.base_config()
  c.method = "mlm"
  c.mlm = ml_collections.ConfigDict(dict(mask_prob=0.15, replace_mask=0.8, replace_random=0.1))
  c.optim.name = "adamw"
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 0.01
  if preset == "shakespeare":
    c.data.name = "shakespeare:byte:128"
    c.batch_size = 32
    c.total_steps = 1500
    c.optim.base_lr = 1e-3
    c.optim.warmup_steps = 100
    c.log_every_steps = 50
    c.model = config_lib.text_transformer(
      vocab_size=259, max_len=128, width=128, depth=4, num_heads=4, mlp_dim=512
    )
  elif preset == "bert_base":
    c.data.name = "python_doc:bpe32768:512"
    c.data.worker_count = 16
    c.batch_size = 256
    c.total_steps = 1_000_000
    c.optim.base_lr = 1e-4
    c.optim.warmup_steps = 10_000
    c.optim.grad_clip_norm = 1.0  # bert optimization.py l.74: tf.clip_by_global_norm(grads, 1.0)
    # optimization.py: polynomial (power 1) decay to 0 over the run, AdamWeightDecayOptimizer
    # with epsilon 1e-6 and exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"].
    c.optim.schedule = "linear"
    c.optim.eps = 1e-6
    c.optim.decay_mask = "rank_no_bias"
    c.log_every_steps = 100
    c.checkpoint.every_steps = 10_000
    c.model = config_lib.text_transformer(
      vocab_size=32768, max_len=512, width=768, depth=12, num_heads=12, mlp_dim=3072, dropout=0.1
    )
  elif preset == "test":
    config_lib.tiny_test_preset(c)
    c.data.name = "pydoc_topics:byte:32"
    c.batch_size = 8
    c.model = config_lib.text_transformer(
      vocab_size=259, max_len=32, width=16, depth=2, num_heads=2, mlp_dim=32
    )
  else:
    raise ValueError(f"Unknown mlm preset {preset!r}; choose one of {PRESETS}.")
  c.model.lm_transform = True
  c.lock()
  return c
