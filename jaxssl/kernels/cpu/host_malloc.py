"""Which allocator serves this process's host memory, and how to run under tcmalloc.

On CPU the allocator matters for speed. XLA:CPU asks for each executable's temporary buffer (all
the activations a train step keeps, gigabytes for a ViT-S/16 step) afresh on
every call, with posix_memalign from one of its worker threads. glibc serves a request that size
from the thread's arena by a new mmap (a non-main arena falls back to mmap whatever
M_MMAP_MAX says) and unmaps it on free, so every step page-faults the whole buffer back in and the
kernel zeroes it. tcmalloc keeps freed spans mapped and hands them out again, which removes that
cost (docs/performance_cpu.md, "Host allocator", has the figures and the one thing not
understood). Nothing here changes what is computed.

The allocator has to be chosen before the process starts (LD_PRELOAD), so this module only says
which one is loaded, finds tcmalloc on the machine, and re-executes a script under it
(`exec_with`, for benchmarks and launchers); `jaxssl.train` logs `advice()` for a CPU mesh
(`jaxssl.kernels.Kernels.host_advice`).
"""

from __future__ import annotations

import glob
import os
import sys

ALLOCATORS = ("glibc", "tcmalloc", "jemalloc")
# Where distributions put the shared objects (Debian/Ubuntu multiarch, RHEL, conda, Homebrew).
_LIB_DIRS = (
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib/aarch64-linux-gnu",
  "/usr/lib64",
  "/usr/lib",
  "/usr/local/lib",
  "/opt/homebrew/lib",
)
_PATTERNS = {
  "tcmalloc": ("libtcmalloc_minimal.so*", "libtcmalloc.so*"),
  "jemalloc": ("libjemalloc.so*",),
}
INSTALL_HINT = (
  "apt-get install libtcmalloc-minimal4 (Debian/Ubuntu), dnf install "
  "gperftools-libs (Fedora/RHEL) or conda install gperftools"
)


def _mapped_libraries() -> str:
  try:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError:  # not Linux: no /proc
    return ""


def loaded() -> str:
  """'tcmalloc', 'jemalloc' or 'glibc': the allocator mapped into this process.

  A preloaded allocator replaces malloc for the whole process, so the first one found among the
  mapped shared objects is the one in use; 'glibc' when neither is mapped (also off Linux, where
  it means "the system's").
  """
  maps = _mapped_libraries()
  for name in ("tcmalloc", "jemalloc"):
    if f"lib{name}" in maps:
      return name
  return "glibc"


def find(name: str = "tcmalloc") -> str | None:
  """Path of the `name` shared object on this machine (tcmalloc: the minimal build first)."""
  if name not in _PATTERNS:
    raise ValueError(f"Unknown allocator {name!r}; one of {sorted(_PATTERNS)} can be found.")
  dirs = list(_LIB_DIRS)
  if os.environ.get("CONDA_PREFIX"):
    dirs.insert(0, os.path.join(os.environ["CONDA_PREFIX"], "lib"))
  for pattern in _PATTERNS[name]:
    for directory in dirs:
      hits = sorted(glob.glob(os.path.join(directory, pattern)))
      if hits:
        return hits[0]
  return None


def advice() -> str | None:
  """One line for the log when a CPU run would be faster under tcmalloc, else None."""
  if loaded() != "glibc":
    return None
  path = find("tcmalloc")
  how = (
    f"put LD_PRELOAD={path} TCMALLOC_RELEASE_RATE=0 before the command"
    if path
    else f"install tcmalloc ({INSTALL_HINT}) and LD_PRELOAD it"
  )
  return (
    "Host memory comes from glibc malloc, which maps and unmaps XLA:CPU's per-step "
    f"buffers (page faults, often a third of the step on CPU); for speed, {how}. "
    "See jaxssl/kernels/cpu/host_malloc.py."
  )


def resolve(name: str) -> str:
  """`name`, with 'auto' meaning tcmalloc where it is installed and glibc elsewhere."""
  if name == "auto":
    return "tcmalloc" if find("tcmalloc") else "glibc"
  if name not in ALLOCATORS:
    raise ValueError(f"Unknown allocator {name!r}; use auto or one of {ALLOCATORS}.")
  return name


def environment_for(name: str, env: dict[str, str] | None = None) -> dict[str, str]:
  """A copy of `env` (default os.environ) whose LD_PRELOAD selects allocator `name`.

  'glibc' drops any tcmalloc / jemalloc from LD_PRELOAD; the others put theirs first. tcmalloc
  also gets TCMALLOC_RELEASE_RATE=0 unless set: by default it hands idle pages back to the
  kernel a little at a time, and the next step faults them in again (docs/performance_cpu.md,
  "Host allocator"); a training process reuses its peak every step anyway, but
  it keeps that peak until it exits, so run other memory-hungry work in another process
  (benchmarks/vs_pytorch.py does: the peer once ran out of memory beside our finished side).
  """
  if name not in ALLOCATORS:
    raise ValueError(f"Unknown allocator {name!r}; use one of {ALLOCATORS}.")
  env = dict(os.environ if env is None else env)
  keep = [
    p
    for p in env.get("LD_PRELOAD", "").replace(":", " ").split()
    if "libtcmalloc" not in p and "libjemalloc" not in p
  ]
  if name != "glibc":
    path = find(name)
    if path is None:
      hint = INSTALL_HINT if name == "tcmalloc" else "apt-get install libjemalloc2"
      raise FileNotFoundError(
        f"No {name} shared object on this machine ({hint}), or choose the allocator glibc."
      )
    keep.insert(0, path)
    if name == "tcmalloc":
      env.setdefault("TCMALLOC_RELEASE_RATE", "0")
  if keep:
    env["LD_PRELOAD"] = " ".join(keep)
  else:
    env.pop("LD_PRELOAD", None)
  return env


def exec_with(name: str) -> str:
  """Re-executes this Python script under allocator `name` unless it already runs under it.

  `name` may be 'auto' (`resolve`). Returns the allocator in use when no re-exec was needed.

  For scripts (benchmarks, launchers) whose first act this is: everything the process did before
  is lost, and `name` must be findable (`find`).
  """
  name = resolve(name)
  if loaded() == name:
    return name
  env = environment_for(name)
  if env.get("_JAXSSL_MALLOC_REEXEC") == name:
    # The loader did not map it (e.g. a setuid interpreter ignores LD_PRELOAD): do not loop.
    raise RuntimeError(
      f"Re-executed with LD_PRELOAD={env.get('LD_PRELOAD', '')} but {name} is "
      f"not loaded; {loaded()} is."
    )
  env["_JAXSSL_MALLOC_REEXEC"] = name
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.argv, env)
