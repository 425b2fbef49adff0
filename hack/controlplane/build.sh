#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, etcd and kubectl from Go modules and caches them.
#
# The cache lives under the user's cache folder, not inside the clone, because CI runs in a fresh
# clone on the same machine: a cache in the work tree would always be cold there. The cache key
# hashes everything that decides the bytes of the binaries (go.mod, go.sum, the mains, this
# script, the pinned version and the Go version), so a second run is a no-op and any change
# rebuilds. Prints the folder holding the binaries as the last line on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=versions.env
source ./versions.env

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
go_version=$(go env GOVERSION)
key=$( { cat go.mod go.sum versions.env build.sh; find cmd -name '*.go' | LC_ALL=C sort | xargs cat; echo "$go_version"; } |
  sha256sum | cut -c1-16)
cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
bindir="$cache_root/controlplane/$key/bin"
binaries=(kube-apiserver kube-controller-manager etcd kubectl)

complete() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bindir/$b" ] || return 1; done
}

if complete; then
  echo "control plane binaries up to date (key $key)" >&2
  echo "$bindir"
  exit 0
fi

# The version stamp makes /version and `kubectl version` truthful; the build date is the tag's
# date from the module proxy, so the same inputs always give the same binaries.
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
build_date=$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
  sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' | xargs sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION}"
  ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date}"
done

staging=$(mktemp -d "$cache_root/controlplane/.build-XXXXXX" 2>/dev/null || { mkdir -p "$cache_root/controlplane"; mktemp -d "$cache_root/controlplane/.build-XXXXXX"; })
trap 'rm -rf "$staging"' EXIT
echo "building control plane ${KUBERNETES_VERSION} with ${go_version} (key $key); a cold build takes a while" >&2
start=$(date +%s)
go build -trimpath -ldflags "$ldflags" -o "$staging/" ./cmd/... >&2
echo "built in $(( $(date +%s) - start )) s" >&2
mkdir -p "$(dirname "$bindir")"
rm -rf "$bindir"
mv "$staging" "$bindir"
trap - EXIT
ls -l "$bindir" >&2
echo "$bindir"
