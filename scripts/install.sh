#!/usr/bin/env bash
# Installs clauderond as a systemd service on Debian (run as root from a checkout):
#
#   sudo bash scripts/install.sh            # build, install, enable, start
#   sudo bash scripts/install.sh --no-start # install only
#
# Installs: /usr/local/bin/clauderond, /usr/local/bin/clauderon,
#           /etc/systemd/system/clauderond.service,
#           /etc/clauderon/config.yaml (only if absent; from scripts/clauderon.example.yaml),
#           /etc/clauderon/credentials.env (only if absent; empty, 0600 — put tokens there).
# State lives in /var/lib/clauderon (0700). Uninstall: systemctl disable --now clauderond;
# clauderond --config /etc/clauderon/config.yaml teardown; remove the files above.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

START=1
[ "${1:-}" = --no-start ] && START=0

need_root
ensure_packages
command -v systemctl >/dev/null || { echo "error: systemd is required (systemctl not found)" >&2; exit 1; }

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
	printf '# KEY=value lines read by clauderond.service, e.g.\n# CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-...\n# GITHUB_TOKEN=ghp_...\n' >/etc/clauderon/credentials.env
fi
install -d -m 0700 /var/lib/clauderon /var/lib/clauderon/secrets
install -d -m 0755 /usr/local/share/doc/clauderon
install -m 0644 README.md /usr/local/share/doc/clauderon/README.md

log "validating the configuration"
/usr/local/bin/clauderond --config /etc/clauderon/config.yaml config >/dev/null

log "installing the systemd unit"
install -m 0644 scripts/clauderond.service /etc/systemd/system/clauderond.service
systemctl daemon-reload
if [ $START = 1 ]; then
	systemctl enable --now clauderond.service
	for _ in $(seq 1 100); do
		CLAUDERON_SOCKET=$(/usr/local/bin/clauderond --config /etc/clauderon/config.yaml config | awk '/^socket:/{s=1} s && /path:/{print $2; exit}')
		[ -n "$CLAUDERON_SOCKET" ] && export CLAUDERON_SOCKET
		/usr/local/bin/clauderon status >/dev/null 2>&1 && break
		sleep 0.2
	done
	/usr/local/bin/clauderon status || { journalctl -u clauderond -n 30 --no-pager; exit 1; }
else
	echo "installed; start with: systemctl enable --now clauderond"
fi
