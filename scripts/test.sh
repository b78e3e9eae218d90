#!/usr/bin/env bash
# The README's test command: unit tests, root integration tests against the real kernel,
# and the end-to-end suite against a real Docker daemon. Run as root on Debian.
#   bash scripts/test.sh          # everything
#   bash scripts/test.sh unit     # only gofmt, go vet, go test (unit + root integration)
#   bash scripts/test.sh e2e      # only the e2e suite (builds the test images first)
# Every step is timed; the last line is "steps: N passed, M failed". Nothing is skipped
# silently: if Docker or the test images cannot be built, the e2e step FAILS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_packages debootstrap curl git npm tmux
ensure_dockerd

what="${1:-all}"
export CLAUDERON_REQUIRE_ROOT_TESTS=1
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
summary=()
rc=0
t_all=$SECONDS

run_step() {
	local name="$1"; shift
	local start=$SECONDS
	log "$name"
	if "$@"; then
		summary+=("PASS  $name ($((SECONDS - start))s)")
	else
		summary+=("FAIL  $name ($((SECONDS - start))s)")
		rc=1
	fi
}

# build_images exports the image tags for the e2e suite; a failure fails the e2e step.
build_images() {
	local out
	if ! out=$(bash scripts/images.sh all); then
		echo "error: building the e2e test images failed (see above); the e2e suite cannot run" >&2
		return 1
	fi
	eval "$(echo "$out" | grep -E '^CLAUDERON_E2E_(SCRATCH|DEBIAN)_IMAGE=[a-z0-9:._-]+$' | sed 's/^/export /')"
	[ -n "${CLAUDERON_E2E_SCRATCH_IMAGE:-}" ] && [ -n "${CLAUDERON_E2E_DEBIAN_IMAGE:-}" ] || {
		echo "error: scripts/images.sh printed no image tags" >&2
		return 1
	}
}

# e2e runs the suite and fails when any test skipped, except the one skip that is
# announced on purpose (dockerd restart when this run did not start dockerd).
e2e() {
	local log=/tmp/clauderon-e2e.log
	go test -tags e2e -count=1 -timeout 30m -v ./scripts/e2e/ 2>&1 | tee "$log"
	local st=${PIPESTATUS[0]}
	local skips
	skips=$(grep -E '^\s*--- SKIP' "$log" | grep -v 'TestFailClosed_DockerdRestart' || true)
	if [ -n "$skips" ]; then
		echo "error: e2e tests skipped (a skip is a failure here):" >&2
		echo "$skips" >&2
		return 1
	fi
	echo
	echo "e2e results:"
	grep -E '^(--- |ok|FAIL)' "$log" | sed 's/^/  /' || true
	return "$st"
}

if [ "$what" = all ] || [ "$what" = unit ]; then
	run_step "gofmt" bash -c 'test -z "$(gofmt -l . | tee /dev/stderr)"'
	run_step "go vet" go vet ./...
	run_step "go vet -tags e2e ./scripts/..." go vet -tags e2e ./scripts/...
	run_step "go test -race (unit + root integration)" go test -race -count=1 -timeout 20m ./...
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
	run_step "build e2e images (offline; cached)" build_images
	if [ -n "${CLAUDERON_E2E_SCRATCH_IMAGE:-}" ]; then
		run_step "e2e (real Docker, real kernel, real clients)" e2e
		run_step "e2e: the operator's day (install.sh --no-start, the unit's capabilities, group member, credential rotation)" \
			go test -tags e2e -count=1 -timeout 20m -v ./scripts/e2e/install/
		run_step "e2e: two tenants on one host (profiles, sessions, audit, hand-made labels)" \
			go test -tags e2e -count=1 -timeout 10m -v ./scripts/e2e/tenants/
		run_step "e2e: the Docker authorization plugin against the real dockerd" \
			go test -tags e2e -count=1 -timeout 10m -v ./scripts/e2e/authz/
		run_step "e2e: Kubernetes node mode (the DaemonSet on a real single-node cluster, ../shared/k8s)" \
			go test -tags e2e -count=1 -timeout 40m -v ./scripts/e2e/kubernetes/
	else
		summary+=("FAIL  e2e (not run: the test images could not be built)")
		rc=1
	fi
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
n_pass=$(printf '%s\n' "${summary[@]}" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "${summary[@]}" | grep -c '^FAIL' || true)
echo "total: $((SECONDS - t_all))s"
echo "steps: $n_pass passed, $n_fail failed"
exit $rc
