#!/usr/bin/env bash
# Builds the operator image with podman from the repository's Dockerfile, unchanged, and caches it.
#
# This project's machines and CI reach package registries but no container registry, so the
# Dockerfile's PYTHON_IMAGE argument (python:3.11-slim for users) gets a stand-in made here:
# Debian bookworm from debootstrap with python3 (3.11, like the official image) and `python`/`pip`
# on the PATH as the official image has them. The stand-in's root filesystem is cached as a tarball
# under ~/.cache/nsbaseline/image/ and imported into podman's storage; the image built on it is
# tagged with a key that hashes everything deciding its bytes (the build context the .dockerignore
# lets through, the Dockerfile, this script and the base's key), so a second run is a no-op and any
# change rebuilds. Prints the image reference (localhost/nsbaseline:<key>) as the last line on
# stdout; the same image is also tagged localhost/nsbaseline:<version>, the name deploy/ uses.
#
# Podman here: runc (crun refuses this machine's hybrid cgroups), explicit ulimits (podman's
# defaults are above what the sandbox allows), host networking for the build's RUN steps (pip
# needs the package index; the default bridge network would add a bridge and iptables rules to the
# host), and the host's CA bundle mounted over the stand-in's own when pip is configured with one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
script="$repo/hack/image/build.sh"

cache_root=${NSBASELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nsbaseline}
cache="$cache_root/image"
mkdir -p "$cache"
# Worktrees and CI on one machine share the cache and podman's storage: one build at a time.
exec 9>"$cache/.lock"
flock 9

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  echo "podman and runc are needed: apt-get install -y --no-install-recommends podman runc debootstrap" >&2
  exit 1
fi
# nofile: the caller's own hard limit. nproc: 32768 (podman build's default), or less when the
# caller has less; this machine refuses any more, whatever `ulimit -Hu` says.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nproc" != unlimited ] && [ "$nproc" -lt 32768 ] || nproc=32768
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
podman=(podman --runtime runc)

suite=bookworm
packages=python3,python3-venv,ca-certificates
base_path=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The stand-in's root filesystem as a tarball: debootstrap, trimmed like the slim images (no apt
# lists or caches, man pages, locales), and a Python of its own at /usr/local/python with pip, the
# way the official image has one at /usr/local. Debian's system pip refuses installs (PEP 668) and
# its ensurepip is disabled, but a virtualenv gets pip from python3-venv.
build_base_tarball() {
  local out=$1
  if ! command -v debootstrap >/dev/null; then
    echo "debootstrap is needed for the stand-in base: apt-get install -y --no-install-recommends debootstrap" >&2
    exit 1
  fi
  root=$(mktemp -d "$cache/.rootfs-XXXXXX")
  partial="$out.tmp"
  trap cleanup_base EXIT
  echo "debootstrap $suite with $packages for the stand-in base (takes a minute or more)" >&2
  # shellcheck disable=SC2086 # the mirror is optional and a single word
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" ${NSBASELINE_DEBIAN_MIRROR:-} >"$cache/debootstrap.log" 2>&1 ||
    { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  chroot "$root" /usr/bin/python3 -m venv /usr/local/python
  # pip trusts the system's CA bundle (the one the build may mount the host's bundle over).
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  tar -C "$root" --numeric-owner -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  cleanup_base
  trap - EXIT
}

root="" partial=""
# --one-file-system: never descend into a /proc or /sys an interrupted debootstrap left mounted.
cleanup_base() {
  if [ -n "$root" ]; then
    umount -R "$root/proc" "$root/sys" 2>/dev/null || true
    rm -rf --one-file-system "$root"
  fi
  [ -z "$partial" ] || rm -f "$partial"
}

base_key=$( { echo "$suite $packages $base_path"; declare -f build_base_tarball; } | sha256sum | cut -c1-16)
base_ref="localhost/nsbaseline-base:$base_key"
base_tar="$cache/base-$base_key.tar"

# Exactly what the .dockerignore lets into the build context, plus what decides how it is built.
key=$( {
  find pyproject.toml README.md operator templates crds -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  sha256sum Dockerfile .dockerignore "$script"
  echo "$base_key"
} | sha256sum | cut -c1-16)
ref="localhost/nsbaseline:$key"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)

if "${podman[@]}" image exists "$ref"; then
  "${podman[@]}" tag "$ref" "localhost/nsbaseline:$version"
  echo "image up to date (key $key)" >&2
  echo "$ref"
  exit 0
fi

start=$(date +%s)
if ! "${podman[@]}" image exists "$base_ref"; then
  [ -s "$base_tar" ] || build_base_tarball "$base_tar"
  "${podman[@]}" import --quiet \
    --change "ENV PATH=$base_path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
    "$base_tar" "$base_ref" >/dev/null
fi

mounts=()
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$cert" ] && [ -f "$cert" ]; then
  mounts=(-v "$cert:/etc/ssl/certs/ca-certificates.crt:ro")
fi

echo "building $ref from Dockerfile on $base_ref" >&2
"${podman[@]}" build --pull=never --network host --layers "${ulimits[@]}" "${mounts[@]}" \
  --build-arg "PYTHON_IMAGE=$base_ref" -f Dockerfile -t "$ref" -t "localhost/nsbaseline:$version" . >&2
echo "built in $(( $(date +%s) - start )) s" >&2

# Keep the three newest keyed images (worktrees alternate between a few) and drop build layers
# nothing has used for a week; everything else stays as the cache.
"${podman[@]}" images --noheading --sort created --format '{{.Repository}}:{{.Tag}}' localhost/nsbaseline |
  grep -E ':[0-9a-f]{16}$' | tail -n +4 | xargs -r "${podman[@]}" rmi >/dev/null 2>&1 || true
"${podman[@]}" image prune --force --filter until=168h >/dev/null 2>&1 || true
echo "$ref"
