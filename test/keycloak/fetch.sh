#!/usr/bin/env bash
# Fetches Keycloak (the Quarkus distribution) from Maven Central once, into
# test/.cache; later runs reuse it. Prints the Keycloak home directory.
set -euo pipefail
version="${KEYCLOAK_VERSION:-26.7.3}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="$here/.cache"
home="$cache/keycloak-$version"
if [ ! -x "$home/bin/kc.sh" ]; then
  mkdir -p "$cache"
  command -v mvn >/dev/null || { echo "fetch.sh: Maven (mvn) is needed to fetch Keycloak" >&2; exit 1; }
  mvn -q -B dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$version:zip" -DoutputDirectory="$cache" >&2
  rm -rf "$home.partial"
  mkdir -p "$home.partial"
  unzip -q "$cache/keycloak-quarkus-dist-$version.zip" -d "$home.partial"
  mv "$home.partial/keycloak-$version" "$home"
  rm -rf "$home.partial" "$cache/keycloak-quarkus-dist-$version.zip"
fi
echo "$home"
