r"""SimCLR throughput: jaxssl vs the PyTorch peer (lightly + torchvision / timm), same run.

  python benchmarks/vs_pytorch.py --torch_python=/tmp/torchvenv/bin/python
  python benchmarks/vs_pytorch.py --backbone=vit_s16      # ViT-S/16 (timm on the peer's side)
  python benchmarks/vs_pytorch.py --image_size=112 --batch_size=32 --steps=5   # quick CPU run

The peer needs its own environment (torch is not a jaxssl requirement):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly timm

--backbone=vit_s16 swaps ResNet-18 for ViT-S/16 on both sides: ours `vit` S/16 with mean-pooled
final-normed patch tokens, no [cls] token and exact erf GELU, the peer timm's `VisionTransformer`
with the same architecture (class_token=False, global_pool='avg', fc_norm=False: norm, then
mean), its fused scaled-dot-product attention, and a 384-2048-128 projection head.

Both sides train the same thing on the same machine, one after the other in one invocation:
ResNet-18 (ImageNet stem, torchvision layout; or ViT-S/16, above) + SimCLR projection head 512-2048-128 (Linear
-> BN -> ReLU -> Linear), NT-Xent at T=0.1 over both views of the batch (one forward over 2N
images, so BatchNorm sees both views), LARS (momentum 0.9, weight decay 1e-6), float32
(--dtype=bfloat16: bf16 compute with float32 weights on both sides, ours `model.dtype`, the
peer `torch.autocast`), the same batch and image size, and the same SimCLR augmentations (random resized crop
(0.08, 1), flip 0.5, colour jitter 0.8 at the config's strength, grayscale 0.2, blur 0.5 with
sigma in (0.1, 2)) on the same random uint8 source images: ours `SimCLRAugment` in Grain
workers, the peer's `lightly.transforms.SimCLRTransform` in DataLoader workers (same count).
Reported: the step alone on a fixed batch (median), and a data-fed loop (examples/s) timed
after --warmup untimed fed steps on each side, once the loader workers' prefetch buffers are full.
Both sides run under the same host allocator, --malloc (default auto: tcmalloc where installed,
`apt-get install libtcmalloc-minimal4`; jaxssl/kernels/cpu/host_malloc.py says why it matters on CPU).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/throughput.py

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# host_malloc is standard library only; loaded by path (not through jaxssl.kernels, which
# imports jax) so the peer's venv, which has no jax, runs it too.
_spec = importlib.util.spec_from_file_location(
  "host_malloc", os.path.join(ROOT, "jaxssl", "kernels", "cpu", "host_malloc.py")
)
host_malloc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(host_malloc)
from timing import median_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEMPERATURE, LR, WEIGHT_DECAY = 0.1, 0.3, 1e-6
# --backbone: (our model config, its feature width, the name in the printed table)
BACKBONES = {
  "resnet18": (dict(name="resnet", depth=18, stem="imagenet", width=64), 512, "ResNet-18"),
  # Exact erf GELU, as timm's (ours defaults to big_vision's tanh form).
  "vit_s16": (
    dict(name="vit", variant="S/16", pool="gap", gelu_approximate=False),
    384,
    "ViT-S/16",
  ),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet18")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--source_size", type=int, default=256)
  p.add_argument("--steps", type=int, default=10, help="timed steps (median for the step)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument(
    "--dtype",
    choices=["float32", "bfloat16"],
    default="float32",
    help="compute dtype: ours model.dtype (float32 master weights); the peer "
    "torch.autocast(cpu, bfloat16) around forward and loss",
  )
  p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
  p.add_argument(
    "--jitter_strength",
    type=float,
    default=None,
    help="SimCLR colour-distortion strength s (jitter (0.8 s, 0.8 s, 0.8 s, 0.2 s)); "
    "default: configs/simclr.py:imagenet's",
  )
  p.add_argument(
    "--torch_python",
    default="/tmp/torchvenv/bin/python",
    help="python of the environment with torch, torchvision and lightly",
  )
  p.add_argument("--role", choices=["ours", "peer", "both"], default="both")
  p.add_argument(
    "--peer_device",
    choices=["auto", "cpu", "cuda"],
    default="auto",
    help="the peer's torch device (auto: cuda where torch sees a GPU); ours runs on jax's "
    "default backend, the GPU on a GPU host",
  )
  p.add_argument(
    "--malloc",
    choices=["auto", "glibc", "tcmalloc"],
    default="auto",
    help="host allocator of both sides (jaxssl/kernels/cpu/host_malloc.py); auto: tcmalloc "
    "where installed. The script re-executes itself under it and the peer "
    "inherits the environment",
  )
  p.add_argument("--json", default="/tmp/jaxssl_vs_pytorch.json")
  return p.parse_args(argv)


def source_images(n, side):
  """The same random uint8 RGB images on both sides (seeded)."""
  return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), np.uint8)


# ------------------------------------------------------------------------------- ours (JAX)
def run_ours(args):
  from absl import flags  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxssl import config_lib  # pylint: disable=g-import-not-at-top
  from jaxssl.data import augment, datasets, pipeline  # pylint: disable=g-import-not-at-top
  import throughput  # pylint: disable=g-import-not-at-top  (StepRunner: the real trainer step)

  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags

  config = config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:imagenet"))
  config.batch_size = args.batch_size
  config.data.image_size = args.image_size
  config.model = ml_collections.ConfigDict(dict(BACKBONES[args.backbone][0], dtype=args.dtype))
  config.simclr.temperature = TEMPERATURE
  config.optim.name, config.optim.weight_decay = "lars", WEIGHT_DECAY
  config.total_epochs, config.total_steps = None, 1000
  if args.jitter_strength is not None:
    config.augment.jitter = augment.simclr_jitter(args.jitter_strength)
  images = source_images(4 * args.batch_size, args.source_size)
  source = [{"image": im, "label": np.int32(0)} for im in images]
  info = datasets.DatasetInfo(
    name="synthetic",
    num_classes=1000,
    image_shape=images.shape[1:],
    split_sizes={"train": len(source)},
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
  )
  runner = throughput.StepRunner(config, source, info)
  step_s = runner.median_step_seconds(args.warmup, args.steps)
  loop_s, wait = runner.fed_loop(
    pipeline.make_train_dataset(
      source, runner.transform, global_batch_size=args.batch_size, seed=1
    ),
    args.workers,
    args.steps,
    args.warmup,
  )
  return dict(
    framework=f"jaxssl (jax {jax.__version__})",
    malloc=host_malloc.loaded(),
    step_s=step_s,
    loop_s=loop_s,
    flops_per_step=runner.flops_per_step,
    data_wait_fraction=wait,
    augment=config.augment.to_dict(),
  )


# ------------------------------------------------------------------------------- the peer
def run_peer(args):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  from lightly.loss import NTXentLoss  # pylint: disable=g-import-not-at-top
  from lightly.models.modules.heads import SimCLRProjectionHead  # pylint: disable=g-import-not-at-top
  from lightly.transforms.simclr_transform import SimCLRTransform  # pylint: disable=g-import-not-at-top
  from lightly.utils.lars import LARS  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  device = args.peer_device
  if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if args.backbone == "vit_s16":
    from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top

    backbone = VisionTransformer(
      img_size=args.image_size,
      patch_size=16,
      embed_dim=384,
      depth=12,
      num_heads=6,
      num_classes=0,
      class_token=False,
      global_pool="avg",
      fc_norm=False,
    )
  else:
    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
  width = BACKBONES[args.backbone][1]
  model = torch.nn.Sequential(backbone, SimCLRProjectionHead(width, 2048, 128, num_layers=2))
  model.to(device).train()
  criterion = NTXentLoss(temperature=TEMPERATURE)
  optimizer = LARS(
    model.parameters(), lr=LR * args.batch_size / 256, momentum=0.9, weight_decay=WEIGHT_DECAY
  )
  transform = SimCLRTransform(
    input_size=args.image_size,
    cj_strength=args.jitter_strength,
    min_scale=0.08,
    random_gray_scale=0.2,
    gaussian_blur=0.5,
    sigmas=(0.1, 2.0),
    hf_prob=0.5,
  )

  class Images(torch.utils.data.Dataset):
    def __init__(self, arrays):
      self.arrays = arrays

    def __len__(self):
      return len(self.arrays)

    def __getitem__(self, i):
      return transform(Image.fromarray(self.arrays[i]))

  images = Images(source_images(4 * args.batch_size, args.source_size))
  fed_steps = max(args.warmup, 1) + args.steps  # the fed loop below: untimed, then timed
  # One iterator over many shuffled epochs, as ours (Grain repeats the shuffled source): a
  # DataLoader re-iterated per epoch would idle its workers at each epoch's start. It runs on
  # past the fed loop by what the workers keep in flight (prefetch_factor 2 each), so they
  # prefetch through the last timed step as Grain's do.
  batches = fed_steps + 2 * args.workers
  loader = torch.utils.data.DataLoader(
    images,
    batch_size=args.batch_size,
    drop_last=True,
    num_workers=args.workers,
    sampler=torch.utils.data.RandomSampler(images, num_samples=batches * args.batch_size),
  )

  def step(views):
    x0, x1 = (v.to(device, non_blocking=True) for v in views)
    # --dtype=bfloat16: torch's standard mixed precision (float32 weights and optimizer;
    # autocast runs matmuls and convolutions in bf16: the AMX tiles where a CPU has them).
    with torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
      z0, z1 = model(torch.cat([x0, x1])).chunk(2)  # one forward: BN over both views, as ours
      loss = criterion(z0, z1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())  # waits for the device

  fixed = next(iter(loader))
  for _ in range(args.warmup):
    step(fixed)
  step_s = median_seconds(lambda: step(fixed), args.steps)

  it = iter(loader)
  for _ in range(fed_steps - args.steps):  # untimed, as ours: workers start, fill buffers
    step(next(it))
  waited, start = 0.0, time.perf_counter()
  for _ in range(args.steps):
    t0 = time.perf_counter()
    views = next(it)
    waited += time.perf_counter() - t0
    step(views)
  loop_total = time.perf_counter() - start
  return dict(
    framework=f"torch {torch.__version__}, torchvision {torchvision.__version__}, lightly",
    device=device,
    malloc=host_malloc.loaded(),
    torch_threads=torch.get_num_threads(),
    step_s=step_s,
    loop_s=loop_total / args.steps,
    data_wait_fraction=waited / loop_total,
  )


def main():
  args = parse_args()
  host_malloc.exec_with(args.malloc)  # the process is replaced unless it already runs under it
  if args.role == "peer":
    print("PEER_RESULT " + json.dumps(run_peer(args)))
    return
  if args.role == "ours":
    ours = run_ours(args)
    print(
      f"ours: {ours['step_s']:.2f} s/step (step alone), {ours['loop_s']:.2f} s/step fed", flush=True
    )
    print("OURS_RESULT " + json.dumps(ours))
    return

  # Each side in its own process, one after the other: an allocator that keeps its peak mapped
  # (tcmalloc with TCMALLOC_RELEASE_RATE=0) would otherwise hold ours while the peer runs.
  def side_args(role):
    return [os.path.abspath(__file__), f"--role={role}"] + [
      f"--{k}={getattr(args, k)}"
      for k in (
        "backbone",
        "batch_size",
        "image_size",
        "source_size",
        "steps",
        "warmup",
        "workers",
        "peer_device",
        "dtype",
        "jitter_strength",
        "malloc",
      )
      if getattr(args, k) is not None
    ]

  proc = subprocess.run([sys.executable] + side_args("ours"), capture_output=True, text=True)
  if proc.returncode != 0 or "OURS_RESULT " not in proc.stdout:
    sys.exit(
      f"Our side failed (exit {proc.returncode}; a negative one is a signal, -9 often the "
      f"OOM killer):\n{proc.stderr[-3000:]}"
    )
  ours = json.loads(proc.stdout.split("OURS_RESULT ", 1)[1].splitlines()[0])
  print(
    f"ours: {ours['step_s']:.2f} s/step (step alone), {ours['loop_s']:.2f} s/step fed", flush=True
  )
  if args.jitter_strength is None:
    args.jitter_strength = ours["augment"]["jitter"][0] / 0.8  # simclr_jitter's brightness
  command = [args.torch_python] + side_args("peer")
  try:
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  except (FileNotFoundError, subprocess.CalledProcessError) as e:
    sys.exit(
      f"The PyTorch peer did not run ({e}; {getattr(e, 'stderr', '')[-2000:]}).\n"
      "Install it in a separate venv:\n  python3 -m venv /tmp/torchvenv\n"
      "  /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly timm\n"
      "and pass --torch_python=/tmp/torchvenv/bin/python."
    )
  peer = json.loads(out.split("PEER_RESULT ", 1)[1].splitlines()[0])

  b = args.batch_size
  rows = [("jaxssl", ours), ("lightly/torch", peer)]
  print(
    f"\nSimCLR {BACKBONES[args.backbone][2]}, batch {b} x 2 views, {args.image_size}px, {args.dtype}, "
    f"{args.workers} loader workers, malloc {ours['malloc']} (peer {peer['malloc']}); "
    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
    f"{platform.machine()} x{os.cpu_count()} cores, load average {os.getloadavg()}\n"
  )
  print("| | step alone (s) | examples/s | data-fed loop (s/step) | examples/s | data wait |")
  print("|---|---|---|---|---|---|")
  for name, r in rows:
    print(
      f"| {name} | {r['step_s']:.2f} | {b / r['step_s']:.1f} | {r['loop_s']:.2f} | "
      f"{b / r['loop_s']:.1f} | {100 * r['data_wait_fraction']:.0f}% |"
    )
  ratio_step, ratio_loop = peer["step_s"] / ours["step_s"], peer["loop_s"] / ours["loop_s"]
  print(
    f"\nours / peer examples/s: step alone {ratio_step:.2f}x, data-fed {ratio_loop:.2f}x "
    "(goal >= 1.5x)"
  )
  with open(args.json, "w") as f:
    json.dump(
      dict(
        args=vars(args),
        ours=ours,
        peer=peer,
        ratio_step=ratio_step,
        ratio_loop=ratio_loop,
        load_avg=os.getloadavg(),
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      ),
      f,
      indent=1,
    )
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
