#!/usr/bin/env bash
# Runs the unit + root integration suites several times under -race while a CPU hog keeps every
# core busy, and prints the failures by test. A test that passes here is not waiting on luck.
#   sudo bash scripts/stress-tests.sh            # 5 rounds, all packages
#   sudo bash scripts/stress-tests.sh 3 ./tlsmitm/ ./appliance/...
# Environment: STRESS_HOGS (default: number of cores), STRESS_TIMEOUT (per round, default 25m).
# The hog is bounded: it stops by itself after the rounds' worst-case time, and on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_packages
ensure_dockerd

rounds="${1:-5}"
shift || true
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
hogs="${STRESS_HOGS:-$(nproc)}"
per_round="${STRESS_TIMEOUT:-25m}"
export CLAUDERON_REQUIRE_ROOT_TESTS=1
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

out=$(mktemp -d /tmp/clauderon-stress.XXXXXX)
hog_pids=()
stop_hogs() {
	for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	hog_pids=()
}
trap stop_hogs EXIT

# The hog lives at most as long as every round could take, so a killed script leaves nothing.
minutes=${per_round%m}
limit=$(( rounds * ${minutes:-25} * 60 + 60 ))
log "starting $hogs CPU hog(s), at most ${limit}s"
for _ in $(seq 1 "$hogs"); do
	timeout "$limit" nice -n 5 sh -c 'while :; do :; done' &
	hog_pids+=($!)
done

go test -race -count=1 -run '^$' "${pkgs[@]}" >/dev/null # build once, outside the rounds
for r in $(seq 1 "$rounds"); do
	log "round $r/$rounds (load: $(cut -d' ' -f1-3 /proc/loadavg))"
	start=$SECONDS
	if go test -race -count=1 -timeout "$per_round" "${pkgs[@]}" >"$out/round$r.log" 2>&1; then
		echo "round $r: ok ($((SECONDS - start))s)"
	else
		echo "round $r: FAILED ($((SECONDS - start))s), log: $out/round$r.log"
	fi
done
stop_hogs

echo
echo "==================== failures by test ===================="
fails=$(grep -hE '^\s*--- FAIL|^FAIL\s|panic: test timed out' "$out"/round*.log | sed -E 's/ \([0-9.]+s\)$//' | sort | uniq -c | sort -rn || true)
if [ -z "$fails" ]; then
	echo "none: $rounds round(s) passed under load (logs: $out)"
	exit 0
fi
echo "$fails"
echo "logs: $out"
exit 1
