#!/usr/bin/env bash
# The build's version, always valid semver so the plugin's install step can
# compare versions: a release tag as is (v0.2.0); a commit after a tag with
# build metadata, which semver gives the tag's precedence
# (v0.2.0+3.gabcdef0), never a pre-release that would sort below the tag
# (git describe's v0.2.0-3-gabcdef0); v0.0.0+g<commit> before any tag.
set -euo pipefail
d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || true)
if [[ -z "$d" ]]; then
  c=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git diff --quiet HEAD 2>/dev/null || echo .dirty)
  echo "v0.0.0+g${c}${dirty}"
  exit 0
fi
if [[ "$d" =~ ^(v[0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)-g([0-9a-f]+)(-dirty)?$ ]]; then
  echo "${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}${BASH_REMATCH[4]:+.dirty}"
elif [[ "$d" =~ ^(v[0-9]+\.[0-9]+\.[0-9]+)-dirty$ ]]; then
  echo "${BASH_REMATCH[1]}+dirty"
else
  echo "$d"
fi
