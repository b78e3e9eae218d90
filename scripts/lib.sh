# Shared shell helpers for scripts/*.sh (sourced, not executed).
# Each helper is idempotent: it does nothing when the machine already has what it needs.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "error: $0 must run as root (it manages Docker networks and nftables); try: sudo bash $0" >&2
		exit 1
	fi
}

# ensure_packages installs the Debian packages the project needs (plus the extra ones named as
# arguments), once.
ensure_packages() {
	local want=(docker.io nftables iproute2 busybox-static ca-certificates "$@")
	local missing=()
	for p in "${want[@]}"; do
		# npm fetches the Claude Code CLI for the e2e image; any npm will do (a NodeSource
		# nodejs ships its own, and Debian's npm package would conflict with it).
		if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing Debian packages: ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	command -v go >/dev/null || { echo "error: Go is not installed (need Go >= 1.26 on PATH)" >&2; exit 1; }
}

# ensure_dockerd starts dockerd in the background when no daemon answers. When it starts one,
# it records the pid in /run/clauderon-e2e-dockerd.pid and exports CLAUDERON_E2E_DOCKERD_STARTED=1:
# the e2e suite restarts only a dockerd this script started, never a shared one.
ensure_dockerd() {
	if docker info >/dev/null 2>&1; then return 0; fi
	log "starting dockerd"
	(setsid dockerd >>/var/log/clauderon-dockerd.log 2>&1 </dev/null & echo $! >/run/clauderon-e2e-dockerd.pid)
	export CLAUDERON_E2E_DOCKERD_STARTED=1
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	echo "error: dockerd did not come up; see /var/log/clauderon-dockerd.log" >&2
	exit 1
}
