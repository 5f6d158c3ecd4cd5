#!/usr/bin/env bash
# Runs Strata's whole test suite. Installs what the tests need first (DCMTK from Debian, the
# Python venv with pydicom and pynetdicom), so it works on a fresh machine. Extra arguments
# go to the test runner, e.g. `tools/test.sh --test store`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-deps.sh

install_debian dcmtk orthanc iproute2 libopenjp2-tools
install_venv
# The HDFS tests run a real Hadoop NameNode and DataNode (tools/hdfs-dev.sh) and compile
# small Java programs against its jars: fetch those once, and a JDK if there is none.
command -v javac >/dev/null || install_debian default-jdk-headless
tools/hdfs-dev.sh fetch
export STRATA_PYTHON="$PWD/.venv/bin/python"

# Release profile: the tests drive the real server binary, and it shares the dependency
# build with `cargo run --release`.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --no-fail-fast "$@"
else
    cargo test --release --no-fail-fast "$@"
fi
