#!/usr/bin/env bash
# Installs clauderond as a systemd service on Debian (run as root from a checkout):
#
#   sudo bash scripts/install.sh            # build, install, enable, start
#   sudo bash scripts/install.sh --no-start # install only (any host; systemd not needed)
#
# Installs: /usr/local/bin/clauderond, /usr/local/bin/clauderon,
#           /etc/systemd/system/clauderond.service,
#           /etc/clauderon/config.yaml (only if absent; from scripts/clauderon.example.yaml),
#           /etc/clauderon/credentials.env (only if absent; empty, 0600 — put tokens there),
#           group clauderon (members use `clauderon` without sudo; the invoking SUDO_USER is added).
# State lives in /var/lib/clauderon (0700). Uninstall: systemctl disable --now clauderond;
# clauderond --config /etc/clauderon/config.yaml teardown; remove the files above.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

START=1
for arg in "$@"; do
	case "$arg" in
	--no-start) START=0 ;;
	*) echo "usage: $0 [--no-start]" >&2; exit 2 ;;
	esac
done

need_root
ensure_packages
HAVE_SYSTEMD=0
[ -d /run/systemd/system ] && command -v systemctl >/dev/null && HAVE_SYSTEMD=1
if [ $START = 1 ] && [ $HAVE_SYSTEMD = 0 ]; then
	echo "error: systemd is not running here; install with --no-start and run" >&2
	echo "       /usr/local/bin/clauderond --config /etc/clauderon/config.yaml yourself" >&2
	exit 1
fi

log "building clauderond and clauderon"
CGO_ENABLED=0 go build -trimpath -buildvcs=false -o bin/ ./cmd/clauderond ./cmd/clauderon

log "installing binaries to /usr/local/bin"
install -m 0755 bin/clauderond /usr/local/bin/clauderond
install -m 0755 bin/clauderon /usr/local/bin/clauderon

log "installing /etc/clauderon"
install -d -m 0755 /etc/clauderon
if [ ! -e /etc/clauderon/config.yaml ]; then
	install -m 0644 scripts/clauderon.example.yaml /etc/clauderon/config.yaml
else
	echo "keeping the existing /etc/clauderon/config.yaml (example: scripts/clauderon.example.yaml)"
fi
if [ ! -e /etc/clauderon/credentials.env ]; then
	install -m 0600 /dev/null /etc/clauderon/credentials.env
	printf '# KEY=value lines, read by clauderond itself on start, on reload and when this file\n# changes (keep it 0600, owned by root), e.g.\n# CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-...\n# GITHUB_TOKEN=ghp_...\n' >/etc/clauderon/credentials.env
fi

log "creating the operators' group clauderon"
getent group clauderon >/dev/null || groupadd --system clauderon
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
	usermod -aG clauderon "$SUDO_USER"
	echo "added $SUDO_USER to the group clauderon (log in again, or run: newgrp clauderon)"
fi
install -d -m 0700 /var/lib/clauderon /var/lib/clauderon/secrets
install -d -m 0755 /usr/local/share/doc/clauderon
install -m 0644 README.md /usr/local/share/doc/clauderon/README.md

log "validating the configuration"
/usr/local/bin/clauderond --config /etc/clauderon/config.yaml config >/dev/null

log "installing the systemd unit"
install -d -m 0755 /etc/systemd/system
install -m 0644 scripts/clauderond.service /etc/systemd/system/clauderond.service
if command -v systemd-analyze >/dev/null; then
	# Fails on a unit systemd would reject; the Requires=docker.service warning on hosts
	# without docker's unit is not an error.
	systemd-analyze verify /etc/systemd/system/clauderond.service
fi
[ $HAVE_SYSTEMD = 1 ] && systemctl daemon-reload
if [ $START = 1 ]; then
	systemctl enable --now clauderond.service
	# clauderon finds the socket through /etc/clauderon/config.yaml.
	for _ in $(seq 1 100); do
		/usr/local/bin/clauderon status >/dev/null 2>&1 && break
		sleep 0.2
	done
	/usr/local/bin/clauderon status || { journalctl -u clauderond -n 30 --no-pager; exit 1; }
else
	echo "installed; start with: systemctl enable --now clauderond"
	[ $HAVE_SYSTEMD = 1 ] || echo "(no systemd here: run /usr/local/bin/clauderond --config /etc/clauderon/config.yaml)"
fi
