#!/usr/bin/env bash
# Builds the DaemonSet image (FROM scratch: static clauderond + clauderon) with Docker.
#   bash scripts/kubernetes/image.sh [TAG]     # default clauderond:latest
# Push it to your registry, or load it on a node: `docker save TAG | ctr -n k8s.io images import -`.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-clauderond:latest}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$ctx/" ./cmd/clauderond ./cmd/clauderon
cp scripts/kubernetes/Dockerfile "$ctx/"
roots=/etc/ssl/certs/ca-certificates.crt
[ -s "$roots" ] || { echo "error: $roots is missing (apt-get install ca-certificates)" >&2; exit 1; }
cp "$roots" "$ctx/"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
