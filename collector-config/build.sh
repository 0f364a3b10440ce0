#!/usr/bin/env bash
# Build markov-otelcol, the collector distribution of collector-config/builder-config.yaml, with
# the OpenTelemetry Collector Builder (ocb), and print the binary's path as the last line.
#
#   bash collector-config/build.sh          # e.g. ~/.cache/markov-otelcol/v0.165.0/3f2a.../markov-otelcol
#
# The binary goes to a cache dir outside the repo, named by the release and the manifest's digest:
# a second run with the same manifest prints the same path without building. Needs Go and the Go
# module proxy; Go's module and build caches make a rebuild after a manifest change quick.
#   MARKOV_OTELCOL_CACHE=DIR   where binaries go (default ${XDG_CACHE_HOME:-~/.cache}/markov-otelcol)
set -euo pipefail

release=v0.165.0   # the builder's release: the same as every module in the manifest
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/builder-config.yaml"
digest="$(sha256sum "$manifest" | cut -c1-16)"
cache="${MARKOV_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/markov-otelcol}"
dir="$cache/$release/$digest"
binary="$dir/markov-otelcol"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is not installed (https://go.dev/doc/install)" >&2; exit 1; }
gobin="$(go env GOBIN)"
builder="${gobin:-$(go env GOPATH)/bin}/builder"
if [[ ! -x "$builder" ]] || ! "$builder" version 2>/dev/null | grep -q "${release#v}"; then
  echo "build.sh: installing the collector builder $release" >&2
  go install "go.opentelemetry.io/collector/cmd/builder@$release" >&2
fi

# The manifest's output_path is replaced by a fresh dir beside the final one, renamed into place
# only when the build succeeded, so an interrupted build never leaves a binary that looks done.
work="$(mktemp -d "$cache/build.XXXXXX" 2>/dev/null || { mkdir -p "$cache" && mktemp -d "$cache/build.XXXXXX"; })"
trap 'rm -rf "$work"' EXIT
sed "s#^\(  output_path:\).*#\1 $work/src#" "$manifest" >"$work/manifest.yaml"
echo "build.sh: building markov-otelcol $release (manifest $digest); a cold build takes minutes" >&2
"$builder" --config "$work/manifest.yaml" >&2
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mkdir "$dir"
mv "$work/src/markov-otelcol" "$binary"
cp "$manifest" "$dir/builder-config.yaml"
echo "$binary"
