#!/usr/bin/env bash
# The README's test command: unit tests, root integration tests against the real kernel,
# and the end-to-end suite against a real Docker daemon. Run as root on Debian.
#   bash scripts/test.sh          # everything
#   bash scripts/test.sh unit     # only go test (unit + root integration)
#   bash scripts/test.sh e2e      # only the e2e suite
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_packages
ensure_dockerd

what="${1:-all}"
export CLAUDERON_REQUIRE_ROOT_TESTS=1
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
summary=()
rc=0

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

if [ "$what" = all ] || [ "$what" = unit ]; then
	run_step "gofmt" bash -c 'test -z "$(gofmt -l . | tee /dev/stderr)"'
	run_step "go vet" go vet ./...
	run_step "go test -race (unit + root integration)" go test -race -count=1 -timeout 20m ./...
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
	if ls scripts/e2e/*_test.go >/dev/null 2>&1; then
		run_step "e2e (real Docker, real kernel, real clients)" go test -tags e2e -count=1 -timeout 45m -v ./scripts/e2e/
	fi
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
n_pass=$(printf '%s\n' "${summary[@]}" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "${summary[@]}" | grep -c '^FAIL' || true)
echo "steps: $n_pass passed, $n_fail failed"
exit $rc
