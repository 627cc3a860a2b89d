#!/usr/bin/env bash
# Run the project's pinned helm (installed on first use, then cached): `scripts/helm.sh ARGS...`
# runs `helm ARGS...`. The binary is built from source through the Go module proxy with
# `go install helm.sh/helm/v3/cmd/helm@VERSION` into $STREAMSYNC_CACHE_DIR/helm/VERSION/bin
# (default ~/.cache/streamsync, the same root as the Kafka jar cache), so CI on a clean clone
# needs only Go on the PATH. The first build takes a few minutes; later runs start at once.
# STREAMSYNC_HELM_VERSION picks another version; `scripts/helm.sh --print-path` installs and
# prints the binary's path without running it.
set -euo pipefail
version="${STREAMSYNC_HELM_VERSION:-v3.22.0}"
cache_root="${STREAMSYNC_CACHE_DIR:-}"
if [ -z "${cache_root// /}" ]; then
    cache_root="$HOME/.cache/streamsync"
fi
cache_root="${cache_root/#\~/$HOME}"
dir="$cache_root/helm/$version"
bin="$dir/bin/helm"
if [ ! -x "$bin" ]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "streamsync: helm $version is not cached in $dir and Go is not on the PATH to build it" >&2
        exit 2
    fi
    mkdir -p "$dir"
    # Build into a temporary directory and move the binary into place at the end, so an
    # interrupted build (or two builds at once) never leaves a half-written helm behind.
    tmp="$(mktemp -d "$dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "streamsync: building helm $version into $dir (once; takes a few minutes)" >&2
    GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
        go install "helm.sh/helm/v3/cmd/helm@$version" >&2
    mkdir -p "$dir/bin"
    mv -f "$tmp/helm" "$bin"
fi
if [ "${1:-}" = "--print-path" ]; then
    echo "$bin"
    exit 0
fi
exec "$bin" "$@"
