#!/usr/bin/env bash
# ci/preview.sh: render every policy for every namespace manifest; fail on render errors.
set -euo pipefail
mkdir -p out
for ns in namespaces/*.yaml; do
  name=$(basename "$ns" .yaml)
  cat policies/*.yaml | nsbaseline render -f - --namespace-file "$ns" > "out/$name.yaml"
done
git diff --no-index --stat expected/ out/ || true   # or post out/ as a PR comment
