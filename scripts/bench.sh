#!/usr/bin/env bash
# Benchmarks: the Go micro-benchmarks of the data path, then (as root, with Docker) the
# end-to-end latency of an intercepted request from a container through the real daemon,
# compared with the same client talking to the upstream directly. Prints one table.
#   bash scripts/bench.sh             # micro + e2e
#   bash scripts/bench.sh micro       # only go test -bench (no root needed)
#   BENCHTIME=2s bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
what=${1:-all}
BENCHTIME=${BENCHTIME:-1s}
E2E_N=${E2E_N:-300}
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

log "go test -bench (tlsmitm, dnsredir, injector, appliance/audit; benchtime $BENCHTIME)"
go test -run='^$' -bench=. -benchmem -benchtime="$BENCHTIME" ./tlsmitm/ ./dnsredir/ ./injector/ ./appliance/audit/ | tee "$out"

if [ "$what" = all ]; then
	need_root
	ensure_dockerd
	log "end-to-end latency through clauderond ($E2E_N sequential requests per mode)"
	# The suite builds (or reuses) its images through scripts/images.sh.
	go test -tags e2e -run='^$' -bench=E2E -benchtime="${E2E_N}x" ./scripts/e2e/ | tee -a "$out"
fi

echo
echo "==================== benchmark summary ===================="
awk '/^pkg:/ {pkg=$2; sub(/.*clauderond\//, "", pkg)}
     /^Benchmark/ {
        name=$1; sub(/-[0-9]+$/, "", name)
        line=sprintf("%-22s %-48s", pkg, name)
        for (i=3; i<NF; i+=2) line=line sprintf("  %s %s", $i, $(i+1))
        print line
     }' "$out"
