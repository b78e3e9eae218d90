# clauderon image build: builds the default agent image with no registry but
# the Debian package archive and the npm registry. Embedded in the clauderon
# binary and run as
#
#   bash -c "$script" clauderon-image-build --tag T --claude-version V --codex-version V
#        [--from IMAGE] [--cache-dir DIR] [--mirror URL]
#
# Progress (each step, with its time) goes to stderr; the verbose output of
# the tools goes to $CACHE/build.log. On stdout it prints KEY=VALUE lines for
# the Go side: status=built|up-to-date, tag, id, hash, claude_code, codex,
# base, seconds — or error=MESSAGE on failure (exit 1).
#
# Slow inputs are cached under the cache dir: the debootstrap tarball and one
# npm install per agent version. The image carries the label
# clauderon.agent.hash, a hash of everything that goes into it (this script,
# the Debian suite and package list, both versions, the --from image's ID, the
# architecture); when the tag already carries that hash nothing is done.
set -euo pipefail
umask 022

TAG=clauderon-agent:latest
CLAUDE_VERSION=
CODEX_VERSION=
FROM=
CACHE=/var/cache/clauderon/agent-image
MIRROR=
E2E_CACHE=/var/cache/clauderon-e2e # scripts/images.sh's cache: a Claude Code install there is reused
SUITE=bookworm
INCLUDE=ca-certificates,curl,git,less,procps,ripgrep,openssh-client,xz-utils,unzip
PATH_DEFAULT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

T_START=$EPOCHREALTIME
STEP=preflight
LOG=
STAGE=
EXPORT_CTR=
ERRORED=

note() { printf 'clauderon image build: %s\n' "$*" >&2; }

# die MESSAGE: the error for the Go side (it prints it, exit 1).
die() {
	ERRORED=1
	printf 'error=%s\n' "$*"
	exit 1
}

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

# step NAME FUNC ARGS...: runs FUNC with its name and time on stderr.
step() {
	local name=$1 t0=$EPOCHREALTIME
	shift
	STEP=$name
	note "$name ..."
	"$@"
	note "$name: done in $(seconds_since "$t0")"
}

# logged CMD...: runs CMD with its output appended to the build log.
logged() {
	echo "+ $*" >>"$LOG"
	"$@" >>"$LOG" 2>&1
}

cleanup() {
	local rc=$?
	if [ -n "$EXPORT_CTR" ]; then docker rm -f "$EXPORT_CTR" >/dev/null 2>&1 || true; fi
	if [ -n "$STAGE" ] && [ -d "$STAGE" ]; then rm -rf --one-file-system "$STAGE"; fi
	rm -f "$CACHE/export-$$.tar"
	if [ "$rc" -ne 0 ] && [ -z "$ERRORED" ]; then
		printf 'error=%s\n' "step \"$STEP\" failed (exit $rc); see ${LOG:-the output above}"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

while [ $# -gt 0 ]; do
	case $1 in
	--tag) TAG=$2; shift 2 ;;
	--claude-version) CLAUDE_VERSION=$2; shift 2 ;;
	--codex-version) CODEX_VERSION=$2; shift 2 ;;
	--from) FROM=$2; shift 2 ;;
	--cache-dir) CACHE=$2; shift 2 ;;
	--mirror) MIRROR=$2; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done
[ -n "$CLAUDE_VERSION" ] && [ -n "$CODEX_VERSION" ] || die "--claude-version and --codex-version are required"

case $(uname -m) in
x86_64) NPM_ARCH=x64 ;;
aarch64) NPM_ARCH=arm64 ;;
*) die "unsupported architecture $(uname -m) (Claude Code and Codex ship linux x64 and arm64)" ;;
esac

CLAUDE_PREFIX=$CACHE/claude-code-$CLAUDE_VERSION
CLAUDE_SUBPATH=lib/node_modules/@anthropic-ai/claude-code/node_modules/@anthropic-ai/claude-code-linux-$NPM_ARCH/claude
CODEX_PREFIX=$CACHE/codex-$CODEX_VERSION
CODEX_SUBDIR=lib/node_modules/@openai/codex/node_modules/@openai/codex-linux-$NPM_ARCH/vendor

# ---- preflight ---------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, file ownership in the image): run: sudo clauderon image build"
command -v docker >/dev/null || die "the docker CLI is missing (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (is dockerd running? systemctl start docker)"
for t in tar sha256sum flock awk; do command -v $t >/dev/null || die "$t is missing"; done
mkdir -p "$CACHE" || die "cannot create the cache dir $CACHE"

script_text=${BASH_EXECUTION_STRING:-$(cat "$0")}
if [ -n "$FROM" ]; then
	FROM_ID=$(docker image inspect --format '{{.Id}}' "$FROM" 2>/dev/null) ||
		die "image $FROM not found locally (--from takes a local image; docker load or docker build it first: no registry is used)"
	BASE="from:$FROM@$FROM_ID"
else
	BASE="debian:$SUITE-minbase"
fi
HASH=$(printf '%s\n' "$script_text" "$BASE" "$SUITE $INCLUDE" "claude-code $CLAUDE_VERSION" "codex $CODEX_VERSION" "$NPM_ARCH" | sha256sum | cut -c1-16)

summary() {
	printf 'status=%s\ntag=%s\nid=%s\nhash=%s\nclaude_code=%s\ncodex=%s\nbase=%s\nseconds=%s\n' \
		"$1" "$TAG" "$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null)" "$HASH" \
		"$CLAUDE_VERSION" "$CODEX_VERSION" "$BASE" "$(seconds_since "$T_START" | tr -d s)"
}

up_to_date() {
	[ "$(docker image inspect --format '{{index .Config.Labels "clauderon.agent.hash"}}' "$TAG" 2>/dev/null)" = "$HASH" ]
}

if up_to_date; then
	note "$TAG is up to date (claude-code $CLAUDE_VERSION, codex $CODEX_VERSION, hash $HASH)"
	summary up-to-date
	exit 0
fi

# One build at a time per cache dir.
exec 9>"$CACHE/lock"
if ! flock -n 9; then
	note "waiting for another image build (lock $CACHE/lock) ..."
	flock 9
	if up_to_date; then
		note "$TAG is up to date (built meanwhile)"
		summary up-to-date
		exit 0
	fi
fi

LOG=$CACHE/build.log
: >"$LOG"
note "building $TAG (claude-code $CLAUDE_VERSION, codex $CODEX_VERSION, base $BASE); log: $LOG"

# ---- steps -------------------------------------------------------------------

# debian_mirror: the Debian mirror apt uses on this host (one-line or deb822 sources).
debian_mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1=="deb" && $0 ~ /debian/ && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}') || true
	if [ -z "$m" ]; then
		m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '/^URIs:/ && $2 ~ /debian\/?$/ && $2 !~ /security/ {print $2; exit}') || true
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# rm_rootfs DIR: removes a (possibly half-built) rootfs, first unmounting what
# debootstrap may have left mounted in it (proc, sys, devpts).
rm_rootfs() {
	[ -e "$1" ] || return 0
	local m
	for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$1"
}

# base_debian: the cached debootstrap tarball in BASE_TAR.
base_debian() {
	local key wip mirror
	key=$(echo "$SUITE minbase $INCLUDE $NPM_ARCH" | sha256sum | cut -c1-12)
	BASE_TAR=$CACHE/debian-$SUITE-minbase-$key.tar
	if [ -s "$BASE_TAR" ]; then
		note "using the cached $BASE_TAR"
		return 0
	fi
	command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
	mirror=${MIRROR:-$(debian_mirror)}
	wip=$CACHE/rootfs-$key.wip
	rm_rootfs "$wip"
	note "debootstrap --variant=minbase $SUITE from $mirror (once; cached in $BASE_TAR)"
	logged debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$wip" "$mirror" ||
		die "debootstrap from $mirror failed; see $LOG (and $wip/debootstrap/debootstrap.log if present; --mirror URL picks another mirror)"
	rm -rf "$wip"/var/cache/apt/archives/*.deb "$wip"/var/lib/apt/lists/* "$wip"/var/log/*.log
	tar --numeric-owner --xattrs --xattrs-include='security.capability' -C "$wip" -cf "$BASE_TAR.tmp" . &&
		mv "$BASE_TAR.tmp" "$BASE_TAR" || die "writing $BASE_TAR failed"
	rm_rootfs "$wip"
}

# base_from: the --from image's filesystem exported (no registry) into BASE_TAR.
base_from() {
	EXPORT_CTR=clauderon-image-export-$$
	BASE_TAR=$CACHE/export-$$.tar
	logged docker create --name "$EXPORT_CTR" --entrypoint /clauderon-export-only "$FROM" ||
		die "docker create of $FROM failed; see $LOG"
	logged docker export -o "$BASE_TAR" "$EXPORT_CTR" || die "docker export of $FROM failed; see $LOG"
	docker rm -f "$EXPORT_CTR" >/dev/null 2>&1 || true
	EXPORT_CTR=
}

# npm_install PKG VERSION PREFIX FILE: npm install -g PKG@VERSION into PREFIX
# (once), which must then hold FILE.
npm_install() {
	local pkg=$1 ver=$2 prefix=$3 file=$4
	if [ -e "$prefix/$file" ]; then
		note "using the cached $prefix"
		return 0
	fi
	command -v npm >/dev/null || die "npm is missing (apt-get install npm): it fetches $pkg once"
	note "npm install -g $pkg@$ver (once; cached in $prefix)"
	rm -rf "$prefix.wip"
	logged npm install -g --no-fund --no-audit --prefix "$prefix.wip" "$pkg@$ver" ||
		die "npm install $pkg@$ver failed; see $LOG"
	[ -e "$prefix.wip/$file" ] ||
		die "npm installed $pkg@$ver but $file is missing (its optional platform package did not install); see $LOG"
	rm -rf "$prefix" && mv "$prefix.wip" "$prefix"
}

agent_claude() {
	if [ ! -x "$CLAUDE_PREFIX/$CLAUDE_SUBPATH" ] && [ -x "$E2E_CACHE/claude-code-$CLAUDE_VERSION/$CLAUDE_SUBPATH" ]; then
		note "reusing Claude Code from $E2E_CACHE/claude-code-$CLAUDE_VERSION"
		CLAUDE_BIN=$E2E_CACHE/claude-code-$CLAUDE_VERSION/$CLAUDE_SUBPATH
		return 0
	fi
	npm_install @anthropic-ai/claude-code "$CLAUDE_VERSION" "$CLAUDE_PREFIX" "$CLAUDE_SUBPATH"
	CLAUDE_BIN=$CLAUDE_PREFIX/$CLAUDE_SUBPATH
}

agent_codex() {
	npm_install @openai/codex "$CODEX_VERSION" "$CODEX_PREFIX" "$CODEX_SUBDIR"
	local d
	for d in "$CODEX_PREFIX/$CODEX_SUBDIR"/*/; do
		if [ -x "$d/bin/codex" ]; then CODEX_DIR=${d%/}; return 0; fi
	done
	die "no native codex binary under $CODEX_PREFIX/$CODEX_SUBDIR; remove $CODEX_PREFIX and retry"
}

# link_or_copy SRC DST: hard link (the stage lives next to the cache) or copy.
link_or_copy() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }

# ensure_user: a uid 1000 user (agent, or the --from image's own) with its home.
ensure_user() {
	local r=$STAGE
	touch "$r/etc/passwd" "$r/etc/group"
	if ! awk -F: '$3 == 1000 { f = 1 } END { exit !f }' "$r/etc/group"; then
		awk -F: '$1 == "agent" { f = 1 } END { exit !f }' "$r/etc/group" &&
			die "the image has a group agent whose gid is not 1000"
		echo 'agent:x:1000:' >>"$r/etc/group"
		[ -f "$r/etc/gshadow" ] && echo 'agent:!::' >>"$r/etc/gshadow"
	fi
	AGENT_HOME=$(awk -F: '$3 == 1000 { print $6; exit }' "$r/etc/passwd")
	if [ -z "$AGENT_HOME" ]; then
		awk -F: '$1 == "agent" { f = 1 } END { exit !f }' "$r/etc/passwd" &&
			die "the image has a user agent whose uid is not 1000"
		local sh=/bin/sh
		[ -x "$r/bin/bash" ] && sh=/bin/bash
		AGENT_HOME=/home/agent
		echo "agent:x:1000:1000:clauderon agent:$AGENT_HOME:$sh" >>"$r/etc/passwd"
		[ -f "$r/etc/shadow" ] && echo 'agent:*:19000:0:99999:7:::' >>"$r/etc/shadow"
	fi
	AGENT_USER=$(awk -F: '$3 == 1000 { print $1; exit }' "$r/etc/passwd")
	mkdir -p "$r$AGENT_HOME" "$r$AGENT_HOME/.claude" "$r$AGENT_HOME/.codex" "$r/workspace"
	chown 1000:1000 "$r$AGENT_HOME" "$r$AGENT_HOME/.claude" "$r$AGENT_HOME/.codex" "$r/workspace"
	chmod 0755 "$r$AGENT_HOME" "$r/workspace"
}

assemble() {
	STAGE=$(mktemp -d -p "$CACHE" stage.XXXXXX)
	tar --numeric-owner --xattrs --xattrs-include='security.capability' -C "$STAGE" -xf "$BASE_TAR" ||
		die "unpacking $BASE_TAR failed"
	if [ -n "$FROM" ]; then
		rm -f "$BASE_TAR" "$STAGE/.dockerenv"
		[ -x "$STAGE/bin/sh" ] || die "$FROM has no /bin/sh; layer the agents onto an image with a shell and libc (e.g. debian, ubuntu)"
	fi
	mkdir -p "$STAGE/usr/local/bin" "$STAGE/usr/local/lib" "$STAGE/tmp"
	chmod 1777 "$STAGE/tmp"
	rm -rf "$STAGE/usr/local/bin/claude" "$STAGE/usr/local/bin/codex" "$STAGE/usr/local/lib/codex"
	link_or_copy "$CLAUDE_BIN" "$STAGE/usr/local/bin/claude"
	link_or_copy "$CODEX_DIR" "$STAGE/usr/local/lib/codex"
	ln -s ../lib/codex/bin/codex "$STAGE/usr/local/bin/codex"
	ensure_user
	# Mount points for the daemon's files (CA, Codex config): root-owned, empty.
	rm -rf "$STAGE/etc/clauderon"
	install -d -m 0755 -o 0 -g 0 "$STAGE/etc/clauderon"
}

# changes: the --change lines for docker import into CHANGES.
changes() {
	local path=$PATH_DEFAULT kv k v cmd ep
	CHANGES=()
	if [ -n "$FROM" ]; then
		# Keep the user image's ENV, ENTRYPOINT and CMD; PATH gains /usr/local/bin.
		while IFS= read -r kv; do
			[ -n "$kv" ] || continue
			k=${kv%%=*} v=${kv#*=}
			if [ "$k" = PATH ]; then path=$v; continue; fi
			case $k in HOME | DISABLE_AUTOUPDATER) continue ;; esac
			v=${v//\\/\\\\} v=${v//\"/\\\"} v=${v//\$/\\\$}
			CHANGES+=(--change "ENV $k=\"$v\"")
		done < <(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$FROM")
		case ":$path:" in *:/usr/local/bin:*) ;; *) path=/usr/local/bin:$path ;; esac
		ep=$(docker image inspect --format '{{json .Config.Entrypoint}}' "$FROM")
		cmd=$(docker image inspect --format '{{json .Config.Cmd}}' "$FROM")
		[ "$ep" != null ] && [ "$ep" != "[]" ] && CHANGES+=(--change "ENTRYPOINT $ep")
		[ "$cmd" != null ] && [ "$cmd" != "[]" ] && CHANGES+=(--change "CMD $cmd")
		[ "$cmd" = null ] && [ "$ep" = null ] && CHANGES+=(--change 'CMD ["/bin/sh"]')
	else
		CHANGES+=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]')
	fi
	CHANGES+=(
		--change "ENV PATH=$path"
		--change 'ENV DISABLE_AUTOUPDATER=1'
		--change "ENV HOME=$AGENT_HOME"
		--change 'USER 1000:1000'
		--change 'WORKDIR /workspace'
		--change "LABEL clauderon.agent=1 clauderon.agent.claude-code=$CLAUDE_VERSION clauderon.agent.codex=$CODEX_VERSION clauderon.agent.hash=$HASH clauderon.agent.user=$AGENT_USER"
		--change "LABEL clauderon.agent.base=\"$BASE\""
	)
}

import() {
	local old
	old=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
	changes
	echo "+ tar -C $STAGE -c . | docker import ${CHANGES[*]} - $TAG" >>"$LOG"
	tar --numeric-owner --xattrs --xattrs-include='security.capability' -C "$STAGE" -c . |
		docker import "${CHANGES[@]}" - "$TAG" >>"$LOG" 2>&1 || die "docker import of $TAG failed; see $LOG"
	# The build it replaces, when it is one of ours and nothing else uses it.
	if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ] &&
		[ "$(docker image inspect --format '{{index .Config.Labels "clauderon.agent"}}|{{len .RepoTags}}' "$old" 2>/dev/null)" = "1|0" ]; then
		docker rmi "$old" >>"$LOG" 2>&1 || true
	fi
}

if [ -n "$FROM" ]; then
	step "export $FROM" base_from
else
	step "Debian $SUITE rootfs (debootstrap)" base_debian
fi
step "Claude Code $CLAUDE_VERSION (npm)" agent_claude
step "Codex $CODEX_VERSION (npm)" agent_codex
step "assemble the rootfs" assemble
step "docker import $TAG" import
note "built $TAG in $(seconds_since "$T_START") (size $(docker image inspect --format '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
summary built
