#!/usr/bin/env bash
# Runs every native Go fuzz target in the repository for a while each.
#   bash scripts/fuzz.sh            # 30s per target
#   bash scripts/fuzz.sh 2m         # any go test -fuzztime value
#   FUZZ_MATCH=DNS bash scripts/fuzz.sh 10s   # only targets whose name matches
# Targets are discovered (func FuzzXxx in *_test.go), so new ones are picked up automatically.
# New crashers land in the package's testdata/fuzz/<Target>/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${1:-30s}
MATCH=${FUZZ_MATCH:-.}
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

mapfile -t targets < <(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+' . |
	grep -v '/scripts/e2e/' | sed -E 's|^\./(.*)/[^/]+_test\.go:func |\1 |; s|^\./[^/]+_test\.go:func |. |' | sort -u)
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets found" >&2; exit 1; }

results=()
rc=0
for t in "${targets[@]}"; do
	pkg=${t%% *} name=${t##* }
	[[ $name =~ $MATCH ]] || continue
	printf '\033[1m==> %s %s (%s)\033[0m\n' "$pkg" "$name" "$FUZZTIME" >&2
	start=$SECONDS
	if set -o pipefail && go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "./$pkg" 2>&1 | tail -n 3; then
		results+=("PASS  $pkg $name ($((SECONDS - start))s)")
	else
		results+=("FAIL  $pkg $name ($((SECONDS - start))s)")
		rc=1
	fi
done
echo
printf '%s\n' "${results[@]}"
echo "fuzz targets: $(printf '%s\n' "${results[@]}" | grep -c '^PASS') passed, $(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true) failed"
exit $rc
