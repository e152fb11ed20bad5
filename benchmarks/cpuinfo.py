"""What /proc/cpuinfo says of this CPU (Linux; empty answers elsewhere). No JAX import."""

import platform


def field(name: str) -> str | None:
  """The value of the first `name` line of /proc/cpuinfo ('flags', 'model name'), or None."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == name:
          return value.strip()
  except OSError:
    pass
  return None


def flags() -> set[str]:
  """The CPU's feature flags ('avx512f', 'avx512_bf16', 'amx_tile', ...)."""
  return set((field("flags") or "").split())


def model() -> str:
  """The CPU's model name, or what `platform` knows."""
  return field("model name") or platform.processor() or platform.machine()
