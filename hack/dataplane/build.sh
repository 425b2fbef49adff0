#!/usr/bin/env bash
# Builds kube-router (only its NetworkPolicy firewall is used) from Go modules and caches it.
#
# Test tooling for the dataplane tests, never shipped. Like hack/controlplane/build.sh, the binary
# is cached under the user's cache folder (CI runs in a fresh clone), keyed by a hash of go.mod,
# go.sum, versions.env, this script and the Go version; a second run is a no-op and any change
# rebuilds. Prints the folder holding the binary as the last line on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=versions.env
source ./versions.env

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
go_version=$(go env GOVERSION)
key=$( { cat go.mod go.sum versions.env build.sh; echo "$go_version"; } | sha256sum | cut -c1-16)
cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
bindir="$cache_root/dataplane/$key/bin"

if [ -x "$bindir/kube-router" ]; then
  echo "kube-router up to date (key $key)" >&2
  echo "$bindir"
  exit 0
fi

module=github.com/cloudnativelabs/kube-router/v2
# The version stamp makes `kube-router --version` truthful; the build date is the tag's date from
# the module proxy, so the same inputs always give the same binary.
build_date=$(go mod download -json "${module}@${KUBE_ROUTER_VERSION}" |
  sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' | xargs sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')
ldflags="-s -w -X ${module}/pkg/version.Version=${KUBE_ROUTER_VERSION}"
ldflags+=" -X ${module}/pkg/version.BuildDate=${build_date}"

mkdir -p "$cache_root/dataplane"
staging=$(mktemp -d "$cache_root/dataplane/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "building kube-router ${KUBE_ROUTER_VERSION} with ${go_version} (key $key); a cold build takes minutes" >&2
start=$(date +%s)
go build -trimpath -ldflags "$ldflags" -o "$staging/kube-router" "${module}/cmd/kube-router" >&2
echo "built in $(( $(date +%s) - start )) s" >&2
rm -rf "$(dirname "$bindir")"
mkdir -p "$(dirname "$bindir")"
mv "$staging" "$bindir"
trap - EXIT
ls -l "$bindir" >&2
echo "$bindir"
