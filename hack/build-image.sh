#!/usr/bin/env bash
# Builds an image as an OCI image layout tarball under bin/image/, with no container engine
# (hack/image; docs/cluster.md):
#   certpilot  bin/image/certpilot.tar: /manager (entrypoint) and /edge, named $IMG (certpilot:dev)
#   pause      bin/image/pause.tar: the single-node cluster's sandbox image (hack/image/pause)
#   registry   bin/image/registry: the single-node cluster's registry (hack/image/registry), a command
# `make image` and the single-node cluster (internal/testcluster) run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/bin/image"
mkdir -p "${out}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
build() { go build -trimpath -ldflags='-s -w' "$@"; }

case "${1:-certpilot}" in
  certpilot)
    (cd "${root}" && build -o "${out}/manager" . && build -o "${out}/edge" ./cmd/edge)
    (cd "${root}/hack/image" && go run . --name "${IMG:-certpilot:dev}" --entrypoint /manager \
      --binary "/manager=${out}/manager" --binary "/edge=${out}/edge" --out "${out}/certpilot.tar")
    ;;
  pause)
    (cd "${root}/hack/image" && build -o "${out}/pause" ./pause &&
      go run . --name certpilot.local/pause:1 --entrypoint /pause --roots=false \
        --binary "/pause=${out}/pause" --out "${out}/pause.tar")
    ;;
  registry)
    (cd "${root}/hack/image" && build -o "${out}/registry" ./registry)
    ;;
  *) echo "usage: $0 [certpilot|pause|registry]" >&2; exit 2 ;;
esac
