#!/usr/bin/env bash
# Run on the build machine (Debian 12) before a GPU run: packs the headers the GPU machine
# lacks (ICU, PCRE2, libcurl) into .devcarry/headers.tgz (git-ignored, about 1 MB), for
#   run(carry=[".devcarry/headers.tgz"], command="bash tests/gpu/run.sh")
# tests/gpu/run.sh unpacks them there and points pkg-config at that machine's own runtime
# libraries; ICU's versioned symbol suffix is rewritten to its ICU version.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=$(mktemp -d)
cp -r /usr/include/unicode "$T/"
cp /usr/include/pcre2.h "$T/"
for d in /usr/include/curl /usr/include/x86_64-linux-gnu/curl; do [ -d "$d" ] && cp -r "$d" "$T/curl" && break; done
mkdir -p .devcarry
tar -czf .devcarry/headers.tgz -C "$T" .
rm -rf "$T"
ls -la .devcarry/headers.tgz
