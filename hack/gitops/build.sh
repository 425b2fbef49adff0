#!/usr/bin/env bash
# Builds the GitOps engine for the end-to-end tests from Go modules and caches it: Argo CD's
# application controller and repo server (wrapper mains in cmd/ that import Argo CD's command
# packages), argocd-health-lua (Argo CD's Lua health evaluation, for checking our health check
# directly), the kustomize CLI the repo server shells out to for kustomize sources, and the
# git-verify-wrapper.sh script it runs, taken from the argo-cd module like Argo CD's image does.
#
# Like hack/controlplane/build.sh, the cache lives under the user's cache folder (CI runs in a
# fresh clone), keyed by a hash of everything that decides the bytes (both go.mod/go.sum pairs,
# the mains, versions.env, this script, the Go version); a second run is a no-op. Prints the
# folder holding the binaries as the last line on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# shellcheck source=versions.env
source ./versions.env

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
go_version=$(go env GOVERSION)
key=$( { cat go.mod go.sum kustomize/go.mod kustomize/go.sum versions.env build.sh;
  find cmd -name '*.go' | LC_ALL=C sort | xargs cat; echo "$go_version"; } | sha256sum | cut -c1-16)
cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
bindir="$cache_root/gitops/$key/bin"
binaries=(argocd-application-controller argocd-repo-server argocd-health-lua kustomize git-verify-wrapper.sh)

complete() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bindir/$b" ] || return 1; done
}

if complete; then
  echo "gitops engine binaries up to date (key $key)" >&2
  echo "$bindir"
  exit 0
fi

# Stamp the version the way Argo CD's Makefile does, so the logs say which release runs; the
# build date is the tag's date from the module proxy, so the same inputs give the same binaries.
info=$(go mod download -json "github.com/argoproj/argo-cd/v3@${ARGOCD_VERSION}" |
  sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')
build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
kubectl_version=$(go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' k8s.io/kubectl)
pkg=github.com/argoproj/argo-cd/v3/common
ldflags="-s -w -X $pkg.version=${ARGOCD_VERSION#v} -X $pkg.buildDate=${build_date}"
ldflags+=" -X $pkg.kubectlVersion=${kubectl_version}"
ldflags+=" -X $pkg.extraBuildInfo=nsbaseline-hack-gitops-gitops-engine-${GITOPS_ENGINE_VERSION}"

mkdir -p "$cache_root/gitops"
staging=$(mktemp -d "$cache_root/gitops/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "building Argo CD ${ARGOCD_VERSION} and kustomize ${KUSTOMIZE_VERSION} with ${go_version} (key $key); a cold build takes a while" >&2
start=$(date +%s)
go build -trimpath -ldflags "$ldflags" -o "$staging/" ./cmd/... >&2
(cd kustomize && go build -trimpath -ldflags "-s -w" -o "$staging/kustomize" sigs.k8s.io/kustomize/kustomize/v5) >&2
# The repo server runs this script from the PATH on every manifest generation (commit signature
# check); Argo CD's image copies it from the repository's hack/ folder, so do we, from the module.
module_dir=$(go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
install -m 0755 "$module_dir/hack/git-verify-wrapper.sh" "$staging/"
echo "built in $(( $(date +%s) - start )) s" >&2
rm -rf "$(dirname "$bindir")"
mkdir -p "$(dirname "$bindir")"
mv "$staging" "$bindir"
trap - EXIT
ls -l "$bindir" >&2
echo "$bindir"
