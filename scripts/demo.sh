#!/usr/bin/env bash
# clauderond in one command: an unchanged container calls https://api.anthropic.com holding only
# a placeholder, and the daemon injects the real credential on the way out.
#
#   sudo bash scripts/demo.sh          # offline: no internet, no credentials needed
#   sudo CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-… bash scripts/demo.sh --real
#                                      # against the real API with a real token (needs internet;
#                                      # ANTHROPIC_API_KEY=sk-ant-api… works too)
#
# Offline mode: a local fake upstream (scripts/demo/fakeupstream, its own throwaway CA) stands in
# for api.anthropic.com through the config's `upstreams` override, with a random demo token. The
# container still dials the real name and trusts only clauderon's local CA.
# --real mode: no `upstreams` override and no fake; the container runs the real Claude Code CLI
# (image from scripts/images.sh, which needs the Debian mirror and the npm registry) and the
# token comes from your environment. The token never enters the container either way.
#
# Steps: install missing packages → build → build the demo image (FROM scratch, offline) → start
# clauderond with a demo config → run the container → show the reply and the audit line
# (auth_injected: true) → show a bypass attempt being refused. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

REAL=0
[ "${1:-}" = --real ] && REAL=1
NET=clauderon-demo
BRIDGE=clauderon-demo0
SUBNET=10.213.99.0/24
DEMO=""
DAEMON_PID=""
UPSTREAM_PID=""

step() { printf '\n\033[1;34m### %s\033[0m\n' "$*" >&2; }
die() { echo "demo: error: $*" >&2; exit 1; }

cleanup() {
	local rc=$?
	set +e
	step "cleaning up"
	[ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
	if [ -n "$DEMO" ] && [ -f "$DEMO/config.yaml" ]; then
		bin/clauderond --config "$DEMO/config.yaml" teardown >/dev/null 2>&1 ||
			echo "demo: clauderond teardown failed; run: bin/clauderond --config $DEMO/config.yaml teardown" >&2
	fi
	[ -n "$UPSTREAM_PID" ] && kill -TERM "$UPSTREAM_PID" 2>/dev/null && wait "$UPSTREAM_PID" 2>/dev/null
	if [ $rc -ne 0 ] && [ -n "$DEMO" ] && [ -f "$DEMO/daemon.log" ]; then
		echo "--- last lines of the daemon log ---" >&2
		tail -n 20 "$DEMO/daemon.log" >&2
	fi
	[ -n "$DEMO" ] && rm -rf "$DEMO"
	echo "removed: the demo network $NET, its nftables table, the daemon, the fake upstream, $DEMO" >&2
	exit $rc
}

preflight() {
	need_root
	if [ $REAL = 1 ] && [ -z "${CLAUDE_CODE_OAUTH_TOKEN:-}${ANTHROPIC_API_KEY:-}" ]; then
		die "--real needs CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY in the environment (sudo -E or sudo VAR=… bash $0 --real)"
	fi
	if pgrep -x clauderond >/dev/null; then
		die "a clauderond is already running on this host; the demo uses the same nftables table (inet clauderon). Stop it first."
	fi
	step "1/7 packages and Docker"
	if [ $REAL = 1 ]; then ensure_packages debootstrap npm; else ensure_packages; fi
	ensure_dockerd
}

build() {
	step "2/7 building bin/clauderond and bin/clauderon (CGO_ENABLED=0)"
	CGO_ENABLED=0 go build -trimpath -buildvcs=false -o bin/ ./cmd/clauderond ./cmd/clauderon
	DEMO=$(mktemp -d /tmp/clauderon-demo.XXXXXX)
	if [ $REAL = 0 ]; then
		CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$DEMO/fakeupstream" ./scripts/demo/fakeupstream
	fi
	step "3/7 demo image (FROM scratch: busybox-static + a static Go HTTPS client; built offline)"
	IMAGE=$(bash scripts/images.sh scratch --name-scratch clauderon-demo | sed -n 's/^CLAUDERON_E2E_SCRATCH_IMAGE=//p')
	[ -n "$IMAGE" ] || die "building the demo image failed"
	echo "image: $IMAGE"
	if [ $REAL = 1 ]; then
		AGENT_IMAGE=$(bash scripts/images.sh debian | sed -n 's/^CLAUDERON_E2E_DEBIAN_IMAGE=//p')
		[ -n "$AGENT_IMAGE" ] || die "building the Claude Code image failed"
		echo "agent image: $AGENT_IMAGE"
	fi
}

start_upstream() {
	[ $REAL = 1 ] && return 0
	TOKEN="sk-ant-oat01-DEMO-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	FAKE_UPSTREAM_TOKEN=$TOKEN "$DEMO/fakeupstream" -ca-file "$DEMO/upstream-ca.pem" -addr-file "$DEMO/upstream.addr" \
		>"$DEMO/upstream.log" 2>&1 &
	UPSTREAM_PID=$!
	for _ in $(seq 1 50); do [ -s "$DEMO/upstream.addr" ] && break; sleep 0.1; done
	[ -s "$DEMO/upstream.addr" ] || die "the fake upstream did not start: $(cat "$DEMO/upstream.log")"
	echo "fake api.anthropic.com (answers only the demo token) on $(cat "$DEMO/upstream.addr")"
}

write_config() {
	mkdir -p "$DEMO/state/secrets"
	chmod 700 "$DEMO/state" "$DEMO/state/secrets"
	cat >"$DEMO/config.yaml" <<EOF
# clauderon demo config (see scripts/clauderon.example.yaml for every key)
state_dir: $DEMO/state
socket: {path: $DEMO/state/clauderond.sock}
metrics: {address: ""}
network: {name: $NET, bridge: $BRIDGE, subnet: $SUBNET}
EOF
	if [ $REAL = 0 ]; then
		cat >>"$DEMO/config.yaml" <<EOF
upstreams:   # offline stand-in for the real host; the container still dials api.anthropic.com
  - {host: api.anthropic.com, address: "$(cat "$DEMO/upstream.addr")", ca_file: $DEMO/upstream-ca.pem}
EOF
	fi
}

start_daemon() {
	step "4/7 starting clauderond (config: $DEMO/config.yaml)"
	sed 's/^/    /' "$DEMO/config.yaml" >&2
	export CLAUDERON_SOCKET="$DEMO/state/clauderond.sock"
	if [ $REAL = 0 ]; then
		CLAUDE_CODE_OAUTH_TOKEN=$TOKEN bin/clauderond --config "$DEMO/config.yaml" >"$DEMO/daemon.log" 2>&1 &
	else
		bin/clauderond --config "$DEMO/config.yaml" >"$DEMO/daemon.log" 2>&1 &
	fi
	DAEMON_PID=$!
	for _ in $(seq 1 300); do
		bin/clauderon status >/dev/null 2>&1 && break
		kill -0 "$DAEMON_PID" 2>/dev/null || die "clauderond exited"
		sleep 0.1
	done
	bin/clauderon status || die "clauderond is not ready"
}

run_container() {
	step "5/7 an unchanged container calls https://api.anthropic.com/v1/messages"
	local name=clauderon-demo-$$
	if [ $REAL = 1 ]; then
		echo "\$ clauderon run --rm -u 1000:1000 -e HOME=/home/agent $AGENT_IMAGE claude -p 'say hi' --dangerously-skip-permissions"
		bin/clauderon run --rm --name "$name" -u 1000:1000 -e HOME=/home/agent "$AGENT_IMAGE" \
			claude -p 'Say hi in five words.' --dangerously-skip-permissions
	else
		echo "\$ clauderon run --rm $IMAGE sh -c 'curl-like request with \"Authorization: Bearer \$CLAUDE_CODE_OAUTH_TOKEN\"'"
		bin/clauderon run --rm --name "$name" "$IMAGE" sh -c '
			echo "inside the container: CLAUDE_CODE_OAUTH_TOKEN=$CLAUDE_CODE_OAUTH_TOKEN"
			e2etool httpsget -X POST -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" -H "anthropic-version: 2023-06-01" \
				-d "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"say hi\"}]}" \
				https://api.anthropic.com/v1/messages'
	fi
	step "6/7 the audit line for that request (state_dir/audit.jsonl)"
	local line=""
	for _ in $(seq 1 50); do
		line=$(grep "\"$name\"" "$DEMO/state/audit.jsonl" 2>/dev/null | grep '"/v1/messages' | tail -n 1 || true)
		[ -n "$line" ] && break
		sleep 0.1
	done
	[ -n "$line" ] || die "no audit line for the request"
	echo "$line"
	echo "$line" | grep -q '"auth_injected":true' || die "the audit line does not say auth_injected: true"
	echo "=> auth_injected: true — the real token was added by clauderond; the container only ever held the placeholder."
}

bypass() {
	step "7/7 a bypass attempt: direct IP on another port, ignoring any proxy"
	echo "\$ docker run --rm --network $NET $IMAGE e2etool bypass -hosts 203.0.113.10:80,203.0.113.10:22"
	docker run --rm --network "$NET" "$IMAGE" e2etool bypass -timeout 3s -hosts 203.0.113.10:80,203.0.113.10:22
	echo "=> refused by the kernel (nftables table inet clauderon), not by the container's good will:"
	nft list table inet clauderon | grep -E 'clauderon:reject-tcp' | sed 's/^[[:space:]]*/    /'
}

trap cleanup EXIT
preflight
build
start_upstream
write_config
start_daemon
run_container
bypass
step "done"
