"""Methods by name. A method is one module here; adding one needs no edit to the trainer.

`get(name)` imports `jaxssl.methods.<name>` and returns its `Method` class; `build(config,
kernels)` instantiates `config.method` with the config and the backend's ops
(`jaxssl.kernels.for_mesh(mesh)` of the mesh it will run on).
"""

from __future__ import annotations

import importlib
import pkgutil

from jaxssl.kernels import REFERENCE, Kernels


def available() -> list[str]:
  """Names of the method modules in this package: every module defining `Method` (shared
  pieces such as `common` and `ema` define none)."""
  return sorted(
    info.name
    for info in pkgutil.iter_modules(__path__)
    if not info.name.startswith("_")
    and hasattr(importlib.import_module(f"{__name__}.{info.name}"), "Method")
  )


def get(name: str):
  """Returns the `Method` class of method `name` (e.g. 'simclr')."""
  if name not in available():
    raise ValueError(
      f"Unknown method {name!r}; available methods: {', '.join(available())}. "
      "A new method is a module jaxssl/methods/<name>.py defining `Method`."
    )
  return importlib.import_module(f"{__name__}.{name}").Method


def build(config, kernels: Kernels = REFERENCE):
  """Instantiates the method named by `config.method`, its models built with `kernels`."""
  return get(config.method)(config, kernels)
