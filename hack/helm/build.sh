#!/usr/bin/env bash
# Builds the Helm CLI from Go modules (pinned in go.mod as a `tool`) and caches it.
#
# Like hack/controlplane/build.sh, the binary is cached under the user's cache folder (CI runs in
# a fresh clone), keyed by a hash of go.mod, go.sum, this script and the Go version; a second run
# is a no-op. Prints the path of the helm binary as the last line on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
go_version=$(go env GOVERSION)
key=$( { cat go.mod go.sum build.sh; echo "$go_version"; } | sha256sum | cut -c1-16)
cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
bin="$cache_root/helm/$key/helm"

if [ -x "$bin" ]; then
  echo "helm up to date (key $key)" >&2
  echo "$bin"
  exit 0
fi

helm_version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
# Like Helm's Makefile: the default Kubernetes version for `helm template` and `helm lint` comes
# from the client-go it was built with (v0.X.Y -> 1.X); unstamped it would claim 1.20.
k8s_minor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${k8s_minor}"
done
mkdir -p "$cache_root/helm"
staging=$(mktemp -d "$cache_root/helm/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "building helm ${helm_version} with ${go_version} (key $key)" >&2
start=$(date +%s)
go build -trimpath -ldflags "$ldflags" -o "$staging/helm" helm.sh/helm/v3/cmd/helm >&2
echo "built in $(( $(date +%s) - start )) s" >&2
rm -rf "$(dirname "$bin")"
mv "$staging" "$(dirname "$bin")"
trap - EXIT
echo "$bin"
