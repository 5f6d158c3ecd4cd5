#!/usr/bin/env bash
# Runs Strata's whole test suite. Installs what the tests need first (DCMTK, Orthanc and
# PostgreSQL from Debian, the Python venv with pydicom and pynetdicom), so it works on a fresh
# machine. The suite runs twice: every test on the embedded SQLite locator, then every test
# that touches a locator again on PostgreSQL (STRATA_TEST_LOCATOR=postgres, a private cluster
# from tools/pg-dev.sh). Extra arguments go to the test runner, e.g. `tools/test.sh --test store`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup-deps.sh
install_build_deps

# prometheus brings promtool, which checks the /metrics answer (tests/metrics.rs);
# dicom3tools brings dciodvfy, which validates the whole-slide IOD (tests/wsi.rs).
install_debian dcmtk orthanc iproute2 libopenjp2-tools postgresql openjph-tools curl prometheus dicom3tools
install_venv
# The browser test (tests/ohif.rs) drives Debian's chromium through Playwright (never a
# downloaded browser) with the OHIF viewer from npm.
install_debian chromium fonts-liberation
install_ohif
# The HDFS tests run a real Hadoop NameNode and DataNode (tools/hdfs-dev.sh) and compile
# small Java programs against its jars: fetch those once, and a JDK if there is none.
command -v javac >/dev/null || install_debian default-jdk-headless
tools/hdfs-dev.sh fetch
export STRATA_PYTHON="$PWD/.venv/bin/python"

# A fresh PostgreSQL cluster on a Unix socket, stopped when the suite ends.
tools/pg-dev.sh start --fresh
trap 'tools/pg-dev.sh stop' EXIT

# Release profile: the tests drive the real server binary, and it shares the dependency
# build with `cargo run --release`.
run_suite() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --release --no-fail-fast "$@"
    else
        cargo test --release --no-fail-fast "$@"
    fi
}

# tests/migrate.rs moves an SQLite site to PostgreSQL (SQLite pass only); tests/pg_outage.rs
# stops and starts a PostgreSQL cluster of its own under a node (PostgreSQL pass only).
status=0
if cargo nextest --version >/dev/null 2>&1; then
    echo "== the suite on the SQLite locator"
    run_suite -E 'not binary(pg_outage)' "$@" || status=$?
    echo "== the suite on the PostgreSQL locator (all but the JPEG 2000 codec, the memory bound and locator-free unit tests)"
    STRATA_TEST_LOCATOR=postgres run_suite \
        -E 'not binary(j2k) and not binary(migrate) and not binary(memory) and (not kind(lib) or test(/^locator::/))' \
        "$@" || status=$?
else
    echo "cargo-nextest is missing: install it (cargo install cargo-nextest)" >&2
    exit 1
fi
# The soak: two minutes of load without faults, two with kill -9 every 30 s (tools/soak.sh).
echo "== soak (tools/soak.sh, 2 minutes without and 2 with faults)"
STRATA_BIN=target/release/strata tools/soak.sh 120 || status=$?
# The same load and faults on the PostgreSQL locator (the server killed, the database not).
echo "== soak on PostgreSQL (tools/soak.sh, 2 minutes with faults)"
SOAK_LOCATOR=postgres STRATA_BIN=target/release/strata tools/soak.sh 120 faults || status=$?
# Every fuzz target for 30 s (libFuzzer builds its C++ runtime: needs a C++ compiler).
echo "== fuzzing (tools/fuzz.sh, 30 s a target)"
command -v c++ >/dev/null || install_debian g++
FUZZ_SEED=1 tools/fuzz.sh 30 || status=$?
exit $status
