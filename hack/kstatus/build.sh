#!/usr/bin/env bash
# Builds the kstatus wrapper (main.go over kstatus and Flux's CEL health checks) from Go modules and
# caches it like hack/controlplane/build.sh: under the user's cache folder, keyed by a hash of
# go.mod, go.sum, main.go, this script and the Go version. Prints the binary's path last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
go_version=$(go env GOVERSION)
key=$( { cat go.mod go.sum main.go build.sh; echo "$go_version"; } | sha256sum | cut -c1-16)
cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
bin="$cache_root/kstatus/$key/bin/kstatus"

if [ -x "$bin" ]; then
  echo "kstatus up to date (key $key)" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root/kstatus"
staging=$(mktemp -d "$cache_root/kstatus/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "building kstatus ($(go list -m -f '{{.Path}} {{.Version}}' sigs.k8s.io/cli-utils)) with ${go_version} (key $key)" >&2
start=$(date +%s)
go build -trimpath -ldflags "-s -w" -o "$staging/kstatus" . >&2
echo "built in $(( $(date +%s) - start )) s" >&2
rm -rf "$(dirname "$(dirname "$bin")")"
mkdir -p "$(dirname "$(dirname "$bin")")"
mv "$staging" "$(dirname "$(dirname "$bin")")/bin"
trap - EXIT
echo "$bin"
