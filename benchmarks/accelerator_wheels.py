r"""Wheels a GPU host without network lacks, for benchmarks/accelerator_check.sh.

  python benchmarks/accelerator_wheels.py [--dest=.whl] [--python_version=3.12]

Run here (with the package registries), in the repository root, with the project's venv; then
carry `.whl` to the GPU host (accelerator_check.sh installs `.whl/*.whl` to /tmp/site first).
It walks the requirements of jaxssl (its install_requires) and of the PyTorch peer's `lightly`,
for the GPU host's Python on Linux x86_64, skipping the packages the host's image already has
(IMAGE_PACKAGES below: the device tool's KINDS.md list, read 2026-11-17), and downloads one
wheel of each: the version this venv has where it has one, else the newest. Dependencies are
read from each downloaded wheel's METADATA, so the walk follows the target's markers, not
this host's. A source-only package (e.g. promise) is built here into a pure-Python wheel.
"""

import argparse
import email.parser
import importlib.metadata
import os
import subprocess
import sys
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGE_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc
anyio attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp""".split()
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)] + [
  "manylinux2014_x86_64",
  "manylinux1_x86_64",
]


def _target_env(python_version: str) -> dict[str, str]:
  return dict(
    python_version=python_version,
    python_full_version=python_version + ".0",
    sys_platform="linux",
    platform_system="Linux",
    platform_machine="x86_64",
    os_name="posix",
    implementation_name="cpython",
    platform_python_implementation="CPython",
    extra="",
  )


def _local_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _download(name: str, version: str | None, dest: str, python_version: str) -> str:
  """Path of the one wheel of `name` in `dest` after fetching it for the target."""
  spec = f"{name}=={version}" if version else name
  before = set(os.listdir(dest))
  platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
  binary = subprocess.run(
    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    + ["--python-version", python_version, "--implementation", "cp", *platforms]
    + ["-d", dest, spec],
    check=False,
    stderr=subprocess.DEVNULL,
  )
  if binary.returncode != 0:  # source only: build a (pure-Python) wheel here
    subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dest, spec], check=True
    )
  new = [f for f in set(os.listdir(dest)) - before if f.endswith(".whl")]
  if not new:  # already there from an earlier run
    key = canonicalize_name(name)
    new = [f for f in os.listdir(dest) if canonicalize_name(f.split("-")[0]) == key]
  return os.path.join(dest, new[0])


def _requirements(wheel: str) -> list[str]:
  with zipfile.ZipFile(wheel) as archive:
    meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    message = email.parser.Parser().parsestr(archive.read(meta).decode())
  return message.get_all("Requires-Dist") or []


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dest", default=".whl")
  parser.add_argument("--python_version", default="3.12", help="the GPU host's python3")
  parser.add_argument("--extra", default="lightly", help="more roots, comma-separated")
  args = parser.parse_args()
  os.makedirs(args.dest, exist_ok=True)
  env = _target_env(args.python_version)
  have = {canonicalize_name(n) for n in IMAGE_PACKAGES}
  roots = [r for r in importlib.metadata.requires("jaxssl") or [] if "extra ==" not in r]
  todo = roots + [r for r in args.extra.split(",") if r]
  fetched: dict[str, str] = {}
  while todo:
    requirement = Requirement(todo.pop(0))
    name = canonicalize_name(requirement.name)
    if name in have or name in fetched:
      continue
    if requirement.marker and not requirement.marker.evaluate(env):
      continue
    wheel = _download(name, _local_version(name), args.dest, args.python_version)
    fetched[name] = os.path.basename(wheel)
    todo += _requirements(wheel)
  total = sum(os.path.getsize(os.path.join(args.dest, f)) for f in fetched.values())
  for name, wheel in sorted(fetched.items()):
    print(f"{name:28s} {wheel}")
  mib = total / 2**20
  print(f"{len(fetched)} wheels, {mib:.1f} MiB in {args.dest} (the device tool carries 64)")


if __name__ == "__main__":
  main()
