#!/usr/bin/env bash
# Unleash's published cross-SDK test vectors (the npm package @unleash/client-specification), for
# the tests that check our rollout buckets against every Unleash SDK's. Unpacked into $1.
# Without npm (or the registry) the tests that need them say so and skip, except in CI.
set -euo pipefail
destination=$1
version=6.1.0
if [[ -f "$destination/package/specifications/index.json" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "note: npm is not installed: the Unleash cross-SDK vector tests will be skipped" >&2
  exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! (cd "$scratch" && npm pack --silent "@unleash/client-specification@$version" >/dev/null); then
  echo "note: could not fetch @unleash/client-specification: its tests will be skipped" >&2
  exit 0
fi
mkdir -p "$destination"
tar -xzf "$scratch"/unleash-client-specification-*.tgz -C "$destination"
