#!/usr/bin/env bash
# build.sh — find or provision llama.cpp (pinned b11669), build bin/agent, run the demo or the tests.
#
#   ./build.sh                 set up everything, build bin/agent, run the demo on a generated model
#   ./build.sh test            set up everything, build, run all tests (what CI runs)
#   ./build.sh build           set up everything and build bin/agent only
#   ./build.sh exec CMD...     run CMD in the build environment (inside the build root on Debian 12)
#   ./build.sh shell           an interactive shell in the build environment
#   ./build.sh tools           install what the tests need in the build root (tmux, chromium, node, moto)
#   ./build.sh --from-source   build llama.cpp b11669 from source into ./llama.cpp/install first (needs GitHub)
#
# Where llama.cpp comes from (docs/design.md §2, docs/building.md), first match wins:
#   1. a local from-source prefix (./llama.cpp/install) made earlier by --from-source
#   2. the system's llama.cpp, found by pkg-config and checked with a compile probe of the API we use
#   3. on Debian/apt systems without it: a Debian-unstable build root made with debootstrap, cached in
#      $EXPERTSNIPER_ROOT (default ${XDG_CACHE_HOME:-~/.cache}/expertsniper/sid-b11669); builds and tests run inside it and
#      bin/agent is linked so that it runs from the host shell.
set -euo pipefail

LLAMA_TAG=b11669
# Debian's packaging of b11669. Pinned: a different build changes the API and the numerics.
LLAMA_DEB_VERSION="${EXPERTSNIPER_LLAMA_DEB_VERSION:-1:0.7.0+dfsg-2}"
GGML_DEB_VERSION="${EXPERTSNIPER_GGML_DEB_VERSION:-0.27.0-1}"
MODULE=github.com/expertsniper/expertsniper

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/expertsniper"
ROOT="${EXPERTSNIPER_ROOT:-$CACHE_DIR/sid-$LLAMA_TAG}"
ROOT_LIB="$ROOT/usr/lib/x86_64-linux-gnu"
ROOT_PACKAGES="libllama-dev libggml-dev llama.cpp-tools pkg-config g++ ca-certificates"

say()  { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31mbuild.sh:\033[0m %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

# ---------------------------------------------------------------- toolchain: where Go runs
need go "install Go 1.26 or newer (https://go.dev/dl/) and put it on PATH"
GOROOT_HOST="$(go env GOROOT)"
GOMODCACHE_HOST="$(go env GOMODCACHE)"
GOCACHE_HOST="$(go env GOCACHE)"

MODE=""          # system | source | root
BACKEND_DIR=""   # where ggml's CPU backends are loaded from ("" = llama.cpp's default)
CGO_LDFLAGS_EXTRA=""

# The llama.h API surface we rely on; compiling this proves the build is the one we target.
probe_source() {
	cat <<'EOF'
#include <llama.h>
#include <gguf.h>
int main(void) {
	struct llama_model_params mp = llama_model_default_params();
	mp.use_extra_bufts = false;
	struct llama_model *(*init)(struct gguf_context *, llama_model_set_tensor_data_t, void *,
		struct llama_model_params) = llama_model_init_from_user;
	struct llama_context_params cp = llama_context_default_params();
	cp.cb_eval = 0;
	(void)init; (void)cp;
	return 0;
}
EOF
}

probe_compiles() { # $1 = pkg-config path prefix (may be empty)
	local tmp; tmp="$(mktemp -d)"
	probe_source > "$tmp/p.c"
	local ok=1
	if PKG_CONFIG_PATH="${1:-${PKG_CONFIG_PATH:-}}" cc "$tmp/p.c" -o "$tmp/p" \
		$(PKG_CONFIG_PATH="${1:-${PKG_CONFIG_PATH:-}}" pkg-config --cflags --libs llama ggml 2>/dev/null) 2>"$tmp/err"; then
		ok=0
	fi
	rm -rf "$tmp"
	return $ok
}

# ---------------------------------------------------------------- 1. from source
from_source() {
	need git "install git"
	need cmake "install cmake (apt-get install cmake / brew install cmake)"
	if [ ! -d llama.cpp/.git ]; then
		say "cloning llama.cpp $LLAMA_TAG"
		git clone --depth 1 --branch "$LLAMA_TAG" https://github.com/ggml-org/llama.cpp llama.cpp ||
			die "could not clone llama.cpp $LLAMA_TAG (needs access to GitHub)"
		for p in patches/*.patch; do [ -e "$p" ] && git -C llama.cpp apply "$REPO/$p"; done
	fi
	local extra=()
	[ "$(uname -s)" = Darwin ] && extra+=(-DGGML_METAL=ON)
	cmake -S llama.cpp -B llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
		-DCMAKE_INSTALL_PREFIX="$REPO/llama.cpp/install" "${extra[@]}"
	cmake --build llama.cpp/build -j "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 4)"
	cmake --install llama.cpp/build
}

# ---------------------------------------------------------------- 3. the Debian-unstable build root
host_mirror() {
	# The mirror the host's apt already uses (never hard-coded), unless EXPERTSNIPER_MIRROR names one.
	if [ -n "${EXPERTSNIPER_MIRROR:-}" ]; then echo "$EXPERTSNIPER_MIRROR"; return; fi
	local m=""
	if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
		m="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | grep -i debian | head -1 | awk '{print $2}')"
	fi
	if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
		m="$(grep -h '^deb ' /etc/apt/sources.list | grep -v security | grep -i debian | head -1 | awk '{print $2}')"
	fi
	[ -n "$m" ] || die "cannot find a Debian mirror in /etc/apt/sources.list(.d); set EXPERTSNIPER_MIRROR"
	echo "$m"
}

root_apt() {
	in_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0 -qq "$@"
}

# remove_partial_root deletes what a failed or interrupted debootstrap left in $ROOT.tmp. It unmounts
# what debootstrap may have mounted inside first, and never crosses into another filesystem.
remove_partial_root() {
	[ -e "$ROOT.tmp" ] || return 0
	local m
	for m in proc sys dev/pts dev; do
		umount -l "$ROOT.tmp/$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$ROOT.tmp"
}

provision_root() {
	local stamp="$ROOT/.expertsniper-ready-${LLAMA_DEB_VERSION#*:}-$GGML_DEB_VERSION"
	[ -f "$stamp" ] && return 0
	[ "$(id -u)" = 0 ] || die "making the build root needs root (debootstrap, chroot): run as root, or install llama.cpp $LLAMA_TAG and pkg-config"
	command -v apt-get >/dev/null || die "no llama.cpp $LLAMA_TAG found (pkg-config llama) and this is not an apt system: install llama.cpp $LLAMA_TAG or use --from-source"
	if ! command -v debootstrap >/dev/null; then
		say "installing debootstrap"
		apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null || die "could not install debootstrap"
	fi
	local mirror; mirror="$(host_mirror)"
	if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
		say "making the Debian-unstable build root in $ROOT (about a minute, ~1 GB) from $mirror"
		remove_partial_root; mkdir -p "$(dirname "$ROOT")" "$CACHE_DIR"
		if ! debootstrap --variant=minbase --include=ca-certificates sid "$ROOT.tmp" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
			remove_partial_root
			die "debootstrap failed (offline, or the mirror $mirror cannot be reached?); see $CACHE_DIR/debootstrap.log"
		fi
		mv "$ROOT.tmp" "$ROOT"
	fi
	say "installing llama.cpp $LLAMA_DEB_VERSION in the build root"
	root_apt update || die "apt-get update failed in the build root"
	if ! root_apt install -y --no-install-recommends \
		libllama-dev="$LLAMA_DEB_VERSION" libllama0="$LLAMA_DEB_VERSION" llama.cpp-tools="$LLAMA_DEB_VERSION" \
		libggml-dev="$GGML_DEB_VERSION" libggml0="$GGML_DEB_VERSION" \
		pkg-config g++ ca-certificates procps >/dev/null 2>"$CACHE_DIR/apt.err"; then
		die "could not install llama.cpp $LLAMA_DEB_VERSION / ggml $GGML_DEB_VERSION in the build root: $(grep -v '^W:' "$CACHE_DIR/apt.err" | tail -2). If the mirror no longer has these versions, set EXPERTSNIPER_LLAMA_DEB_VERSION / EXPERTSNIPER_GGML_DEB_VERSION to what it has, knowing that docs/design.md's facts are for b11669"
	fi
	# Let binaries linked for the host (interpreter path = $ROOT/usr/lib/...) run inside the root too.
	mkdir -p "$ROOT$(dirname "$ROOT")"
	ln -sfn / "$ROOT$ROOT"
	touch "$stamp"
}

# llama.cpp's RPC backend (agent rpc-server, --rpc): the ggml plugin, and the stock worker the tests use
# as a second opinion. Its own stamp, so that roots made before it get it without being remade.
RPC_PACKAGES="libggml0-backend-rpc=$GGML_DEB_VERSION llama.cpp-tools-extra=$LLAMA_DEB_VERSION"
provision_rpc() {
	local stamp="$ROOT/.expertsniper-rpc-${LLAMA_DEB_VERSION#*:}-$GGML_DEB_VERSION"
	[ -f "$stamp" ] && return 0
	say "installing llama.cpp's RPC backend in the build root: $RPC_PACKAGES"
	root_apt update || die "apt-get update failed in the build root"
	root_apt install -y --no-install-recommends $RPC_PACKAGES >/dev/null 2>"$CACHE_DIR/apt-rpc.err" ||
		die "could not install $RPC_PACKAGES in the build root: $(grep -v '^W:' "$CACHE_DIR/apt-rpc.err" | tail -2)"
	touch "$stamp"
}

# What the tests need besides llama.cpp (a terminal multiplexer to drive the REPL, a headless browser for
# the web pages, Node.js for the official OpenAI SDK, moto's S3 server for the saved contexts' remote),
# installed in the root where the tests run. moto is pinned: its S3 server's behaviour is what the
# remote's tests were checked against (Debian's rclone lacks `rclone serve s3`).
MOTO_DEB_VERSION="${EXPERTSNIPER_MOTO_DEB_VERSION:-5.2.4-2}"
TEST_PACKAGES="tmux chromium nodejs npm fonts-dejavu-core python3-moto=$MOTO_DEB_VERSION python3-flask-cors"
provision_test_tools() {
	# The stamp names the package list, so that a package added here is installed on roots made before.
	local stamp="$ROOT/.expertsniper-test-tools-$(echo "$TEST_PACKAGES" | cksum | cut -d' ' -f1)"
	[ -f "$stamp" ] && return 0
	say "installing test tools in the build root: $TEST_PACKAGES"
	root_apt update || die "apt-get update failed in the build root"
	root_apt install -y --no-install-recommends $TEST_PACKAGES >/dev/null 2>"$CACHE_DIR/apt-test.err" ||
		die "could not install $TEST_PACKAGES in the build root: $(grep -v '^W:' "$CACHE_DIR/apt-test.err" | tail -2)"
	touch "$stamp"
}

# Run a command inside the root with the repo, Go and Go's caches at the same paths as on the host.
in_root() {
	unshare --mount --propagation private -- bash -c '
		set -e; R="$1"; shift
		for d in "$REPO" "$GOROOT_HOST" "$GOMODCACHE_HOST" "$GOCACHE_HOST" "$EXTRA_MOUNTS"; do
			[ -n "$d" ] || continue
			mkdir -p "$d" "$R$d"; mount --bind "$d" "$R$d"
		done
		mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
		mkdir -p "$R/tmp"; chmod 1777 "$R/tmp"
		cp /etc/resolv.conf "$R/etc/resolv.conf"
		# Trust what the host trusts (e.g. a proxy CA for the package registries).
		if [ -s /etc/ssl/certs/ca-certificates.crt ] && [ -e "$R/etc/ssl/certs/ca-certificates.crt" ]; then
			mount --bind /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
		fi
		exec chroot "$R" env -i HOME=/root TERM="${TERM:-dumb}" CI="${CI:-}" \
			PATH="$GOROOT_HOST/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
			GOROOT="$GOROOT_HOST" GOMODCACHE="$GOMODCACHE_HOST" GOCACHE="$GOCACHE_HOST" \
			GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=1 \
			CGO_LDFLAGS="$CGO_LDFLAGS_EXTRA" EXPERTSNIPER_BACKEND_DIR="$BACKEND_DIR" \
			EXPERTSNIPER_IN_ROOT=1 EXPERTSNIPER_ROOT="$R" ${GOPROXY:+GOPROXY=$GOPROXY} \
			NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
			bash -c "cd \"\$0\" && exec \"\$@\"" "$PWD" "$@"
	' -- "$ROOT" "$@"
}
export REPO GOROOT_HOST GOMODCACHE_HOST GOCACHE_HOST
export EXTRA_MOUNTS="${EXPERTSNIPER_EXTRA_MOUNTS:-}"

# ---------------------------------------------------------------- choose a mode
args=()
for a in "$@"; do
	case "$a" in
	--from-source) from_source; ;;
	*) args+=("$a") ;;
	esac
done
set -- "${args[@]+"${args[@]}"}"

if [ -f "$REPO/llama.cpp/install/lib/pkgconfig/llama.pc" ] || [ -f "$REPO/llama.cpp/install/lib64/pkgconfig/llama.pc" ]; then
	MODE=source
	export PKG_CONFIG_PATH="$REPO/llama.cpp/install/lib/pkgconfig:$REPO/llama.cpp/install/lib64/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
	CGO_LDFLAGS_EXTRA="-Wl,-rpath,$REPO/llama.cpp/install/lib -Wl,-rpath,$REPO/llama.cpp/install/lib64"
elif [ -z "${EXPERTSNIPER_FORCE_ROOT:-}" ] && command -v pkg-config >/dev/null && pkg-config --exists llama 2>/dev/null && probe_compiles ""; then
	MODE=system
else
	MODE=root
	provision_root
	provision_rpc
	BACKEND_DIR="$ROOT_LIB/ggml/backends0"
	CGO_LDFLAGS_EXTRA="-Wl,--dynamic-linker=$ROOT_LIB/ld-linux-x86-64.so.2 -Wl,--disable-new-dtags -Wl,-rpath,$ROOT_LIB -Wl,--no-as-needed -lggml-base -lggml -lstdc++ -lgomp -lgcc_s -lm"
fi
export MODE BACKEND_DIR CGO_LDFLAGS_EXTRA

# env runs "$@" in the build environment for the chosen mode.
run_env() {
	if [ "$MODE" = root ]; then
		in_root "$@"
	else
		CGO_ENABLED=1 CGO_LDFLAGS="$CGO_LDFLAGS_EXTRA ${CGO_LDFLAGS:-}" EXPERTSNIPER_BACKEND_DIR="$BACKEND_DIR" "$@"
	fi
}

# agent --version names the commit it was built from (the build root builds with -buildvcs=false).
GIT_COMMIT="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || true)"
if [ -n "$GIT_COMMIT" ] && [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	GIT_COMMIT="$GIT_COMMIT-dirty"
fi
LDFLAGS="-X $MODULE/binding.defaultBackendDir=$BACKEND_DIR -X main.gitCommit=$GIT_COMMIT"

build() {
	say "building bin/agent (llama.cpp from: $MODE)"
	go mod download
	mkdir -p bin
	run_env go build -ldflags "$LDFLAGS" -o bin/agent ./cmd/agent
}

case "${1:-demo}" in
demo)
	build
	say "running the demo (a generated MoE model, streamed by the sniper)"
	./bin/agent demo
	;;
build) build ;;
tools) [ "$MODE" = root ] && provision_test_tools; say "test tools ready" ;;
test)
	[ "$MODE" = root ] && provision_test_tools
	build
	say "running all tests"
	gofmt_out="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"
	[ -z "$gofmt_out" ] || die "gofmt would change: $gofmt_out"
	run_env go vet ./...
	# The pure-Go packages (those that do not reach binding/) must vet for macOS too.
	# (test variants included: a package whose tests reach binding/ is not pure)
	impure="$(go list -test -f '{{.ImportPath}} {{join .Deps " "}}' ./... | grep "$MODULE/binding" | awk '{print $1}' | sed 's/\.test$//' | sort -u)"
	pure="$(go list ./... | grep -vxF -f <(echo "$impure"; echo "$MODULE/binding") || true)"
	[ -z "$pure" ] || GOOS=darwin CGO_ENABLED=0 go vet $pure || die "GOOS=darwin go vet failed"
	shift || true
	run_env go test -ldflags "$LDFLAGS" -count=1 -timeout 40m "${@:-./...}"
	;;
exec) shift; run_env "$@" ;;
shell) run_env bash ;;
*) die "unknown command '$1' (demo, build, test, exec, shell)" ;;
esac
