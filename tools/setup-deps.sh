#!/usr/bin/env bash
# Installs what Strata's tests and benchmarks use, idempotently: Debian packages given as
# arguments (only those missing) and the Python venv in .venv from tools/requirements.txt.
# Sourced by tools/test.sh and tools/bench.sh.
set -euo pipefail

strata_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

install_debian() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building Strata needs beyond Rust: libjpeg-turbo's TurboJPEG library (the JPEG encoder
# of WADO-RS /rendered and /thumbnail), found by pkg-config, and make for jemalloc (built from
# its C source by tikv-jemalloc-sys). Every script that runs cargo
# calls this first.
install_build_deps() {
    install_debian pkg-config libturbojpeg0-dev make
}

install_venv() {
    local venv="$strata_root/.venv" stamp="$strata_root/.venv/.requirements"
    if [ -x "$venv/bin/python" ] && cmp -s "$strata_root/tools/requirements.txt" "$stamp"; then
        return 0
    fi
    echo "installing the Python venv in .venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$strata_root/tools/requirements.txt"
    cp "$strata_root/tools/requirements.txt" "$stamp"
}

# The OHIF viewer for the browser test (tests/ohif.rs): @ohif/app from npm ships its prebuilt
# static site in dist/; kept in .cache/ohif/VERSION/dist without the onnxruntime folder and
# source maps (about 60 MB of 210). Fetched once.
ohif_version=3.13.2
install_ohif() {
    local dir="$strata_root/.cache/ohif/$ohif_version"
    [ -f "$dir/.complete" ] && return 0
    command -v npm >/dev/null || install_debian npm
    echo "fetching @ohif/app $ohif_version from npm (50 MB, once)"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "@ohif/app@$ohif_version" >/dev/null)
    tar -xzf "$dir/ohif-app-$ohif_version.tgz" -C "$dir" --strip-components=1 \
        --exclude='package/dist/ort' --exclude='*.map' package/dist
    rm -f "$dir/ohif-app-$ohif_version.tgz"
    touch "$dir/.complete"
}
