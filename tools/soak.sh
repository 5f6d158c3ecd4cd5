#!/usr/bin/env bash
# Soak (tools/soak.py): the release server under 32 storing, 8 querying, 4 moving and 2
# getting associations plus a C-ECHO probe, first without faults, then with kill -9 and
# restart every 30 s and stalled query clients; loopback only, bounded in time. Each run
# checks that every acknowledged instance is served once and bit-identical, that
# `strata verify` is clean and that no temporary is left, and prints its table.
#
#   tools/soak.sh            two minutes each (CI)
#   tools/soak.sh 3600       an hour each, by hand
#   tools/soak.sh 600 faults only the run with faults
#
# SOAK_LOCATOR=postgres runs the server on a PostgreSQL locator (a fresh database in the
# private cluster of tools/pg-dev.sh, started if it is not running) instead of SQLite.
#
# When Hadoop's jars are cached (tools/hdfs-dev.sh fetch; tools/test.sh does it), a real
# HDFS is started for the soak and the server archives into it as the load runs (the runs
# with faults also kill its DataNode); SOAK_HDFS=0 leaves it out.
#
# SOAK_SQLITE_CACHE_MIB=N sets the server's [locator] sqlite_cache_mib; SOAK_KEEP=1 keeps a
# passing run's folder (its samples.csv has the RSS curve second by second).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
which=${2:-both}
# STRATA_BIN: a server binary already built (tools/test.sh passes the one its tests ran).
bin=${STRATA_BIN:-target/release/strata}
if [[ -z "${STRATA_BIN:-}" ]]; then
    source tools/setup-deps.sh
    install_build_deps
    cargo build --release --quiet
fi
python=${STRATA_PYTHON:-.venv/bin/python}
status=0
hdfs_flags=()
if [[ "${SOAK_HDFS:-1}" != 0 && -f .cache/hadoop-jars/.complete ]] && command -v java >/dev/null; then
    hdfs_dir=$(mktemp -d /tmp/strata-soak-hdfs.XXXXXX)
    trap 'tools/hdfs-dev.sh stop "$hdfs_dir" >/dev/null 2>&1; rm -rf "$hdfs_dir"' EXIT
    tools/hdfs-dev.sh start "$hdfs_dir" >/dev/null
    hdfs_flags=(--hdfs "$hdfs_dir")
else
    echo "soak: no HDFS (Hadoop jars not fetched, no java, or SOAK_HDFS=0): tiering not soaked"
fi
if [[ "${SOAK_LOCATOR:-sqlite}" == postgres ]]; then
    tools/pg-dev.sh start >/dev/null
fi
for mode in clean faults; do
    [[ "$which" == both || "$which" == "$mode" ]] || continue
    work=$(mktemp -d /tmp/strata-soak.XXXXXX)
    flags=()
    [[ $mode == faults ]] && flags=(--faults)
    [[ -n "${SOAK_SQLITE_CACHE_MIB:-}" ]] && flags+=(--sqlite-cache-mib "$SOAK_SQLITE_CACHE_MIB")
    if [[ "${SOAK_LOCATOR:-sqlite}" == postgres ]]; then
        flags+=(--locator-url "$(tools/pg-dev.sh url "soak_${mode}_$$")")
        echo "soak $mode: PostgreSQL locator"
    fi
    # Bounded even if a client hangs: the load, the wind-down and the final checks.
    timeout --signal=KILL $((seconds * 2 + 300)) "$python" tools/soak.py --strata "$bin" --work "$work" \
        --seconds "$seconds" "${flags[@]}" "${hdfs_flags[@]}" || { status=1; echo "soak $mode: see $work"; continue; }
    if [[ -n "${SOAK_KEEP:-}" ]]; then echo "soak $mode: kept $work"; else rm -rf "$work"; fi
done
exit $status
