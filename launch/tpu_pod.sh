#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM slice.
#
#   TPU_NAME=my-v5e-64 ZONE=us-west4-a launch/tpu_pod.sh \
#     --config=configs/simclr.py:imagenet --workdir=gs://my-bucket/simclr
#
# Set CREATE=1 (with ACCELERATOR_TYPE and RUNTIME_VERSION) to create the slice first.
# jax.distributed.initialize() auto-detects the pod, so no coordinator flags are needed.
# The data must be prepared as TFDS ArrayRecord in --config.data.data_dir (e.g. on GCS).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_URL=${REPO_URL:-}
if [ "${CREATE:-0}" = 1 ]; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE, e.g. v5litepod-64}" \
    --version="${RUNTIME_VERSION:?set RUNTIME_VERSION, e.g. v2-alpha-tpuv5-lite}"
fi
# Copy this checkout to every worker, install, and run; `--worker=all` runs it everywhere.
tar czf /tmp/jaxssl_src.tgz --exclude=.git --exclude=.venv -C "$(dirname "$0")/.." .
gcloud compute tpus tpu-vm scp /tmp/jaxssl_src.tgz "$TPU_NAME":/tmp/ --zone="$ZONE" --worker=all
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "
  set -e; mkdir -p ~/jaxssl && tar xzf /tmp/jaxssl_src.tgz -C ~/jaxssl && cd ~/jaxssl
  python3 -m venv ~/jaxssl_venv && ~/jaxssl_venv/bin/pip install -q -e '.[tpu]'
  ~/jaxssl_venv/bin/python -m jaxssl.train $args"
