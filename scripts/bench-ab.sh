#!/usr/bin/env bash
# Interleaved A/B of terminator builds (and of the peers) in the side-by-side harness's
# topology (../shared/bench, its `run.sh debug` mode): each round starts every variant
# fresh, one after the other, and measures
#   - keep-alive HTTP/1.1 at c=32: req/s, the proxy's CPU µs per request (utime+stime of
#     its process tree, as the harness counts it), the kernel's share of it (stime) and
#     context switches per request;
#   - an event stream over HTTP/1.1 and h2: the mean per-event delay (receive − send).
# It prints the median of each over the rounds. On a VM whose speed moves from minute to
# minute, builds measured in the same rounds are comparable; separate runs are not.
#
#   sudo bash scripts/bench-ab.sh HEAD~1 HEAD             # two builds of this checkout
#   sudo ROUNDS=3 bash scripts/bench-ab.sh HEAD nginx direct
#
# A variant is a row of the harness (direct, nginx, squid, …: proxies/<name>.sh), a git
# revision of this checkout (built from a worktree under $AB_WORK) or a directory holding
# a checkout. Knobs: ROUNDS (5), DUR (4s), SSE_N (100), BENCH_DIR (../shared/bench),
# AB_WORK (/tmp/clauderon-ab). Needs root, like the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SELF="$ROOT/scripts/bench-ab.sh"
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
AB_WORK=${AB_WORK:-/tmp/clauderon-ab}
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-4s}
SSE_N=${SSE_N:-100}
export DUR SSE_N

# tree_stats PID: utime+stime ticks, stime ticks and context switches of PID and its
# descendants.
tree_stats() {
	local pids=("$1") i=0 ticks=0 sys=0 cs=0 p c f u k
	while ((i < ${#pids[@]})); do
		p=${pids[i]}
		i=$((i + 1))
		for c in $(pgrep -P "$p"); do pids+=("$c"); done
	done
	for p in "${pids[@]}"; do
		[[ -r /proc/$p/stat ]] || continue
		read -r u k < <(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
		ticks=$((ticks + u + k)) sys=$((sys + k))
		for f in /proc/"$p"/task/*/status; do
			cs=$((cs + $(awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$f" 2>/dev/null || echo 0)))
		done
	done
	echo "$ticks $sys $cs"
}

# measure LABEL: run inside `run.sh debug` (its NS, BIN, CLIENT_CA, UPSTREAM_* and
# PROXY_DIR); appends one line of results to $AB_WORK/raw.
measure() {
	local label=$1 pid="" s0 s1 out="$AB_WORK/load.json" common
	[[ -f "$PROXY_DIR/pid" ]] && pid=$(cat "$PROXY_DIR/pid")
	common=(-connect "$UPSTREAM_IP:443" -ca "$CLIENT_CA" -label "$label" -rep 1)
	s0=$([[ -n $pid ]] && tree_stats "$pid" || echo "0 0 0")
	ip netns exec "$NS" "$BIN" load "${common[@]}" -url "https://$UPSTREAM_HOST/small" \
		-test ka_h1 -proto h1 -c 32 -d "$DUR" -out "$out.tmp" >/dev/null
	s1=$([[ -n $pid ]] && tree_stats "$pid" || echo "0 0 0")
	local rps reqs
	rps=$(grep -o '"rps":[0-9.]*' "$out.tmp" | tail -1 | cut -d: -f2)
	reqs=$(grep -o '"reqs_total":[0-9]*' "$out.tmp" | tail -1 | cut -d: -f2)
	rm -f "$out.tmp"
	local sse=()
	for proto in h1 h2; do
		ip netns exec "$NS" "$BIN" sse "${common[@]}" -url "https://$UPSTREAM_HOST" -test "sse_$proto" \
			-proto "$proto" -n "$SSE_N" -ms 10 -out "$out.tmp" >/dev/null
		sse+=("$(grep -o '"delay_mean_ms":[0-9.]*' "$out.tmp" | tail -1 | cut -d: -f2)")
		rm -f "$out.tmp"
	done
	read -r t0 k0 c0 <<<"$s0"
	read -r t1 k1 c1 <<<"$s1"
	local hz
	hz=$(getconf CLK_TCK)
	awk -v l="$label" -v rps="$rps" -v reqs="$reqs" -v dt=$((t1 - t0)) -v dk=$((k1 - k0)) -v dc=$((c1 - c0)) -v hz="$hz" \
		-v pid="$pid" -v s1="${sse[0]}" -v s2="${sse[1]}" 'BEGIN {
		cpu = pid == "" ? "-" : sprintf("%.1f", dt * 1e6 / hz / reqs)
		sys = pid == "" ? "-" : sprintf("%.1f", dk * 1e6 / hz / reqs)
		cs = pid == "" ? "-" : sprintf("%.2f", dc / reqs)
		printf "%s %.0f %s %s %s %.3f %.3f\n", l, rps, cpu, sys, cs, s1, s2
	}' >>"$AB_WORK/raw"
}

if [[ ${1:-} == --measure ]]; then
	measure "$2"
	exit
fi

(($# > 0)) || {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}
[[ $(id -u) == 0 ]] || {
	echo "bench-ab: needs root (network namespaces, nftables), like the harness" >&2
	exit 1
}
[[ -x "$BENCH_DIR/run.sh" || -f "$BENCH_DIR/run.sh" ]] || {
	echo "bench-ab: no harness at $BENCH_DIR (set BENCH_DIR)" >&2
	exit 1
}
mkdir -p "$AB_WORK"
: >"$AB_WORK/raw"

# Resolve each variant to a harness row and, for builds, a source directory.
rows=() srcs=() labels=()
for v in "$@"; do
	if [[ -f "$BENCH_DIR/proxies/$v.sh" ]]; then
		rows+=("$v") srcs+=("$ROOT") labels+=("$v")
	elif sha=$(git rev-parse --verify --quiet "$v^{commit}"); then
		dir="$AB_WORK/src-${sha:0:12}"
		[[ -d $dir ]] || git worktree add --detach -q "$dir" "$sha"
		rows+=(clauderond) srcs+=("$dir") labels+=("$v@${sha:0:7}")
	elif [[ -d "$v/tlsmitm" ]]; then
		rows+=(clauderond) srcs+=("$(cd "$v" && pwd)") labels+=("$v")
	else
		echo "bench-ab: $v is neither a harness row, a git revision nor a checkout" >&2
		exit 2
	fi
done

for r in $(seq "$ROUNDS"); do
	for i in "${!rows[@]}"; do
		echo "[$(date +%T)] round $r/$ROUNDS: ${labels[i]}" >&2
		CLAUDEROND_SRC=${srcs[i]} AB_WORK=$AB_WORK bash "$BENCH_DIR/run.sh" debug "${rows[i]}" \
			"bash '$SELF' --measure '${labels[i]}'" >"$AB_WORK/debug.log" 2>&1 ||
			{ echo "bench-ab: ${labels[i]} failed, see $AB_WORK/debug.log" >&2; exit 1; }
	done
done

echo
echo "Medians over $ROUNDS interleaved rounds (keep-alive h1 c=32, $DUR; SSE $SSE_N events 10 ms apart):"
printf '%-28s %10s %12s %12s %12s %12s %12s\n' variant "req/s" "CPU µs/req" "of it sys" "ctx sw/req" "SSE h1 ms" "SSE h2 ms"
for l in "${labels[@]}"; do
	row="$l"
	for col in 2 3 4 5 6 7; do
		row+=" $(awk -v l="$l" -v c="$col" '$1 == l {print $c}' "$AB_WORK/raw" | sort -g |
			awk '{v[NR] = $1} END {if (NR == 0 || v[1] == "-") print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}')"
	done
	printf '%-28s %10s %12s %12s %12s %12s %12s\n' $row
done
echo "(every round: $AB_WORK/raw; SSE is the absolute mean delay: subtract direct's)"
