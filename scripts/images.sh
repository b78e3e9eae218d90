#!/usr/bin/env bash
# Builds the e2e/demo test images offline (no registry pull, no Dockerfile FROM a registry):
#
#   clauderon-e2e-scratch:<hash>  FROM scratch: /bin/busybox (busybox-static) + /usr/local/bin/e2etool
#   clauderon-e2e-debian:<hash>   debootstrap bookworm minbase + curl git python3 python3-requests nodejs
#                                 ca-certificates + the real Claude Code CLI; user agent (uid 1000)
#
# An image is reused when its tag exists and carries the label clauderon.e2e.hash=<hash>, where
# <hash> covers everything that goes into it; otherwise it is rebuilt. Slow inputs are cached
# under /var/cache/clauderon-e2e (debootstrap tarball, npm install of Claude Code).
#
#   bash scripts/images.sh [scratch|debian|all] [--name-scratch NAME]
#
# Prints KEY=VALUE lines on stdout (CLAUDERON_E2E_SCRATCH_IMAGE=…, CLAUDERON_E2E_DEBIAN_IMAGE=…);
# progress goes to stderr. Exits non-zero with a clear message when an image cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CACHE=${CLAUDERON_E2E_CACHE:-/var/cache/clauderon-e2e}
CLAUDE_CODE_VERSION=${CLAUDE_CODE_VERSION:-2.1.332}
DEBIAN_SUITE=bookworm
DEBIAN_INCLUDE=curl,git,python3,python3-requests,nodejs,ca-certificates
BUSYBOX_APPLETS="sh ash cat echo env grep head id ip kill ln ls mkdir nc ping printf ps rm sleep tail test true false wc wget"

die() { echo "error: $*" >&2; exit 1; }

# image_ok TAG HASH: the image exists and was built from HASH.
image_ok() {
	local got
	got=$(docker image inspect --format '{{index .Config.Labels "clauderon.e2e.hash"}}' "$1" 2>/dev/null) || return 1
	[ "$got" = "$2" ]
}

# import_dir DIR TAG HASH [--change ...]: docker import DIR as TAG with the hash label.
import_dir() {
	local dir=$1 tag=$2 hash=$3
	shift 3
	tar --numeric-owner -C "$dir" -c . |
		docker import --change "LABEL clauderon.e2e.hash=$hash" "$@" - "$tag" >/dev/null ||
		die "docker import of $tag failed"
	# Drop older builds of the same image (by repository name, never anything else).
	docker images --format '{{.Repository}}:{{.Tag}}' "${tag%%:*}" | grep -vxF "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
}

# build_scratch NAME: prints the tag of NAME:<hash>, building it when missing.
build_scratch() {
	local name=$1 hash tag stage
	[ -x /bin/busybox ] && /bin/busybox --help >/dev/null 2>&1 || die "/bin/busybox missing (apt-get install busybox-static)"
	[ -n "$(ldd /bin/busybox 2>&1 | grep 'not a dynamic')" ] ||
		die "/bin/busybox is not static (apt-get install busybox-static)"
	hash=$( (sha256sum /bin/busybox scripts/e2e/e2etool/*.go scripts/images.sh go.mod; go version) | sha256sum | cut -c1-16)
	tag="$name:$hash"
	if image_ok "$tag" "$hash"; then
		log "image $tag is up to date" ; echo "$tag"; return 0
	fi
	log "building image $tag (FROM scratch: busybox + e2etool)"
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' RETURN
	mkdir -p "$stage"/{bin,usr/local/bin,etc/ssl/certs,tmp,home/agent,workspace}
	chmod 1777 "$stage/tmp"
	cp /bin/busybox "$stage/bin/busybox"
	for a in $BUSYBOX_APPLETS; do ln -s busybox "$stage/bin/$a"; done
	CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$stage/usr/local/bin/e2etool" ./scripts/e2e/e2etool ||
		die "building e2etool failed"
	printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n' >"$stage/etc/passwd"
	printf 'root:x:0:\nagent:x:1000:\n' >"$stage/etc/group"
	chown 1000:1000 "$stage/home/agent" "$stage/workspace"
	import_dir "$stage" "$tag" "$hash" \
		--change 'ENV PATH=/usr/local/bin:/bin' --change 'CMD ["/bin/sh"]' --change 'WORKDIR /workspace'
	echo "$tag"
}

# debian_mirror prints the Debian mirror apt uses on this host (deb822 or one-line sources).
debian_mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1=="deb" && $0 ~ /debian/ && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}')
	if [ -z "$m" ]; then
		m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '/^URIs:/ && $2 ~ /debian\/?$/ && $2 !~ /security/ {print $2; exit}')
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# debian_base prints the path of the cached debootstrap tarball, creating it when missing.
debian_base() {
	local key tarball wip mirror
	key=$(echo "$DEBIAN_SUITE minbase $DEBIAN_INCLUDE" | sha256sum | cut -c1-12)
	tarball="$CACHE/debian-$DEBIAN_SUITE-minbase-$key.tar"
	if [ -s "$tarball" ]; then echo "$tarball"; return 0; fi
	command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
	mirror=$(debian_mirror)
	wip="$CACHE/rootfs-$key.wip"
	rm -rf "$wip"
	log "debootstrap --variant=minbase $DEBIAN_SUITE from $mirror (cached afterwards in $tarball)"
	debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" "$DEBIAN_SUITE" "$wip" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/debootstrap.log"
	rm -rf "$wip"/var/cache/apt/archives/*.deb "$wip"/var/lib/apt/lists/*
	tar --numeric-owner -C "$wip" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
	rm -rf "$wip"
	echo "$tarball"
}

# claude_binary prints the path of the native Claude Code binary, installing it from npm when missing.
claude_binary() {
	local prefix="$CACHE/claude-code-$CLAUDE_CODE_VERSION" bin
	bin="$prefix/lib/node_modules/@anthropic-ai/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
	if [ ! -x "$bin" ]; then
		command -v npm >/dev/null || die "npm missing (apt-get install npm) — needed once to fetch @anthropic-ai/claude-code"
		log "npm install -g @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION (cached in $prefix)"
		rm -rf "$prefix.wip"
		npm install -g --no-fund --no-audit --prefix "$prefix.wip" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >"$CACHE/npm.log" 2>&1 ||
			die "npm install of Claude Code failed; see $CACHE/npm.log"
		rm -rf "$prefix" && mv "$prefix.wip" "$prefix"
	fi
	[ -x "$bin" ] || die "native Claude Code binary not found at $bin (the optional dependency @anthropic-ai/claude-code-linux-x64 did not install; see $CACHE/npm.log)"
	echo "$bin"
}

# build_debian prints the tag of clauderon-e2e-debian:<hash>, building it when missing.
build_debian() {
	local base claude hash tag stage
	base=$(debian_base)
	claude=$(claude_binary)
	hash=$( (echo "$(basename "$base") $CLAUDE_CODE_VERSION"; sed -n '/^build_debian()/,/^}/p' scripts/images.sh) | sha256sum | cut -c1-16)
	tag="clauderon-e2e-debian:$hash"
	if image_ok "$tag" "$hash"; then
		log "image $tag is up to date"; echo "$tag"; return 0
	fi
	log "building image $tag (debootstrap rootfs + Claude Code $CLAUDE_CODE_VERSION)"
	stage=$(mktemp -d -p "$CACHE")
	trap 'rm -rf "$stage"' RETURN
	tar -C "$stage" -xf "$base"
	install -m 0755 "$claude" "$stage/usr/local/bin/claude"
	echo 'agent:x:1000:1000:agent:/home/agent:/bin/bash' >>"$stage/etc/passwd"
	echo 'agent:x:1000:' >>"$stage/etc/group"
	echo 'agent:*:19000:0:99999:7:::' >>"$stage/etc/shadow"
	mkdir -p "$stage/home/agent" "$stage/workspace"
	echo '{"hasCompletedOnboarding": true}' >"$stage/home/agent/.claude.json"
	chown -R 1000:1000 "$stage/home/agent" "$stage/workspace"
	import_dir "$stage" "$tag" "$hash" \
		--change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV DISABLE_AUTOUPDATER=1' --change 'WORKDIR /workspace' --change 'CMD ["/bin/bash"]'
	echo "$tag"
}

main() {
	local what=${1:-all} scratch_name=clauderon-e2e-scratch s d
	[ "${2:-}" = --name-scratch ] && scratch_name=$3
	need_root
	docker info >/dev/null 2>&1 || die "docker daemon not reachable (scripts/lib.sh ensure_dockerd)"
	mkdir -p "$CACHE"
	case $what in
	scratch | debian | all) ;;
	*) die "usage: $0 [scratch|debian|all] [--name-scratch NAME]" ;;
	esac
	if [ "$what" != debian ]; then
		s=$(build_scratch "$scratch_name")
		echo "CLAUDERON_E2E_SCRATCH_IMAGE=$s"
	fi
	if [ "$what" != scratch ]; then
		d=$(build_debian)
		echo "CLAUDERON_E2E_DEBIAN_IMAGE=$d"
	fi
}

main "$@"
