#!/usr/bin/env bash
# Benchmark: Strata, DCMTK storescp and Orthanc side by side, in one run, on the same
# generated corpus (default 10 CT studies x 200 images + 3 MR x 100). Ingest with DCMTK
# storescu as the sender (MB/s, CPU per instance, peak RSS); C-FIND latency; C-MOVE and C-GET
# of one 200-image study (MB/s, time to first instance); the archive converter on a real HDFS
# beside Hadoop's FsShell -put, and C-MOVE of an archived study; C-FIND on a
# 1,000,000-instance locator. Prints the ratios against the targets at the end.
#
#   tools/bench.sh [--ct-studies N] [--ct-images N] [--mr-studies N] [--mr-images N] [--j2k-only]
#                  [--backup-only] [--locator-only] [--tls-only] [--commit-only] [--ingest-only]
#                  [--web-only] [--levels-only] [--renditions-only] [--wsi-only]
#
# The ingest section (first; alone with --ingest-only) also measures Strata's group commit: the
# corpus sent by 4 and then 8 parallel storescu processes, with the server's fsync and
# fdatasync calls counted by `perf stat` (tracepoints; skipped without perf): syncs per
# instance, against 4 (one data sync, two folder syncs, one WAL sync) without sharing.
#
# The JPEG 2000 section (last; alone with --j2k-only) times Strata's encoder
# (examples/j2k_bench) against OpenJPEG's opj_compress on the same generated CT (512x512
# 12-bit) and MR (256x256 16-bit) images with matching settings: 5 levels (-n 6), 64x64
# code-blocks, one layer, all cores; lossless, lossy at 20:1 of the stored bytes, and ROI.
#
# The backup section (alone with --backup-only) times the backup jobs on the same corpus beside
# the plain tools an admin would otherwise use: `backup run` (near-line copies, fsynced and read
# back) beside `cp -r` + `sync`, `export-volume` beside GNU `tar cf` + `sync`, `verify
# --volumes` beside `cat` of the same files (a read floor), `import-volume` into an empty
# locator (disaster recovery from tape) beside `tar xf` + `sync`, and `backup run` with
# `format = "j2k-roi"` (its MB/s and the size of its copies against the originals). All on one
# disk with a warm page cache: the ratios compare software, not devices.
#
# The locator section (alone with --locator-only) compares the SQLite and the PostgreSQL locator
# (a private cluster from tools/pg-dev.sh, on a Unix socket) with the same clients: C-FIND on a
# 1,000,000-instance index (examples/find_latency, p50/p95), and ingest of the corpus (DCMTK
# storescu, 4 parallel senders) into one node on SQLite, one node on PostgreSQL, and two nodes
# sharing one PostgreSQL locator and one online folder (two senders each).
#
# The TLS section (alone with --tls-only) compares DICOM over TLS with plain DICOM, on the same
# corpus and sender (DCMTK storescu, +tla for TLS, one association per study): Strata's plain
# and TLS listeners beside DCMTK storescp plain and +tls; then C-MOVE of one study from Strata
# to a DCMTK storescp destination, plain and +tls (movescu asks; Strata's sub-association does
# TLS). Prints each TLS/plain ratio against the 0.8x target.
#
# The commitment section (alone with --commit-only) times Storage Commitment of the first study
# (200 CT instances by default): from sending the N-ACTION to receiving the N-EVENT-REPORT on
# the same association (pynetdicom, tools/commit.py), with the study online, then archived on
# a real HDFS (tools/hdfs-dev.sh) by `tier run`; median of 5 requests each, against the
# targets of 1 s online and 3 s archived. Every instance is read back and its CRC-32C checked.
#
# The DICOMweb section (alone with --web-only) stores the corpus in Strata (HTTP listener on)
# and in Orthanc with its DICOMweb plugin (Debian orthanc-dicomweb), then times both with the
# same client (tools/bench_web.py): QIDO-RS study searches (Patient ID, name prefix, one-year
# range) p50/p95, /metadata of the first CT study p50/p95, WADO-RS of that study (MB/s),
# /rendered of its middle image (images/s); then Strata alone: /metadata again once the study
# is archived on a real HDFS (the DataNode's BytesRead must not move), and STOW-RS of the CT
# study beside storescu's C-STORE of it, each into an empty node.
#
# The resolution-levels section (alone with --levels-only) archives the first CT study with
# `compression = "j2k-lossless"` on a local archive, then fetches every instance's WADO-RS
# /thumbnail and /rendered?viewport=256,256 once each (tools/bench_web.py): p50/p95 and the
# archive bytes read (`strata status --json`, bytes_read), with the resolution levels used
# and with them switched off (`[retrieve] resolution_levels = false`: read and decode whole),
# against the targets of 1/8 of the stored bytes and 3x faster for thumbnails.
#
# The rendition-cache section (alone with --renditions-only) stores the corpus, archives it as
# JPEG 2000 lossless (`tier run`) and replays
# 20,000 requests (tools/bench_renditions.py: Zipf(1.0) popularity over the renditions of the
# first 2,000 instances, thumbnails and full-size images, two clients) with no cache, with
# `[renditions] policy = "lru"` and with `policy = "value"`, each cache 10% of the renditions'
# total size: mean/p50/p95 latency, hit ratio and server CPU seconds, against the targets of
# 5x lower mean latency than no cache and lower than LRU's.
#
# The whole-slide section (alone with --wsi-only) makes a 20,000 x 20,000 RGB slide-like PNG once
# (tools/gen_slide.py, kept in .cache) and turns it into 256-pixel JPEG q90 tiles with libvips
# (`vips dzsave`, a Deep Zoom pyramid) and with `strata wsi import` (a DICOM VL Whole Slide
# Microscopy series, one TILED_FULL instance a level, into a fresh node): MB/s of source pixels
# (W x H x 3 over the wall clock, process start and PNG decode included) and the import's peak
# RSS; the series read back through wsidicom (tools/wsi_check.py: levels, pixels against the
# pyramid rule); then random level-0 tiles fetched by WADO-RS /frames one a request
# (tools/bench_tiles.py), online and once archived by `tier run`, against the targets of
# strata/vips >= 1.0 and tile p95 < 20 ms online, < 60 ms archived.
#
# Everything runs inside a private network namespace (unshare -n) with only loopback, so
# Orthanc, which cannot bind to 127.0.0.1 alone, is reachable from nothing else.
# Sequential: one association per study, studies one after another.
# Parallel: 4 storescu processes at once, studies dealt round-robin.
# Each phase starts each server on empty storage (so no phase stores duplicates).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

CT_STUDIES=10 CT_IMAGES=200 MR_STUDIES=3 MR_IMAGES=100 J2K_ONLY="" BACKUP_ONLY="" LOCATOR_ONLY=""
TLS_ONLY="" COMMIT_ONLY="" INGEST_ONLY="" WEB_ONLY="" LEVELS_ONLY="" RENDITIONS_ONLY="" WSI_ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --j2k-only) J2K_ONLY=1; shift ;;
        --backup-only) BACKUP_ONLY=1; shift ;;
        --locator-only) LOCATOR_ONLY=1; shift ;;
        --tls-only) TLS_ONLY=1; shift ;;
        --commit-only) COMMIT_ONLY=1; shift ;;
        --ingest-only) INGEST_ONLY=1; shift ;;
        --web-only) WEB_ONLY=1; shift ;;
        --levels-only) LEVELS_ONLY=1; shift ;;
        --renditions-only) RENDITIONS_ONLY=1; shift ;;
        --wsi-only) WSI_ONLY=1; shift ;;
        --ct-studies) CT_STUDIES=$2; shift 2 ;;
        --ct-images) CT_IMAGES=$2; shift 2 ;;
        --mr-studies) MR_STUDIES=$2; shift 2 ;;
        --mr-images) MR_IMAGES=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# JPEG 2000: our encoder against opj_compress. Self-contained: needs only the j2k_bench
# example, /usr/bin/opj_compress and /usr/bin/opj_decompress, and the venv's numpy for PSNR.
j2k_section() {
    local bench="$root/target/release/examples/j2k_bench" dir="$root/.cache/j2k-bench" runs=20
    if [ ! -x /usr/bin/opj_compress ] || [ ! -x "$bench" ]; then
        echo "J2K: opj_compress or $bench missing; skipping the J2K section" >&2
        return 0
    fi
    mkdir -p "$dir"
    "$bench" --write-pgm "$dir"
    # Mean wall-clock ms of `runs` runs of a command (process start and file I/O included,
    # which favours our in-memory example slightly).
    mean_ms() {
        local t0 t1
        "$@" >/dev/null 2>&1
        t0=$(date +%s%N)
        for _ in $(seq "$runs"); do "$@" >/dev/null 2>&1; done
        t1=$(date +%s%N)
        echo "($t1 - $t0) / 1000000 / $runs" | bc -l
    }
    field() { grep -o " $1=[^ ]*" <<<"$2" | cut -d= -f2; }
    pgm_psnr() {
        "$root/.venv/bin/python" - "$1" "$2" "$3" <<'PY'
import sys, numpy as np
def pgm(p):
    d = open(p, "rb").read()
    parts, pos = [], 0
    while len(parts) < 4:
        while d[pos:pos+1].isspace(): pos += 1
        if d[pos:pos+1] == b"#":
            pos = d.index(b"\n", pos)
            continue
        end = pos
        while not d[end:end+1].isspace(): end += 1
        parts.append(d[pos:end]); pos = end
    pos += 1
    w, h, maxv = int(parts[1]), int(parts[2]), int(parts[3])
    return np.frombuffer(d[pos:], dtype=">u2" if maxv > 255 else "u1")[: w * h].astype(np.float64)
a, b, bits = pgm(sys.argv[1]), pgm(sys.argv[2]), int(sys.argv[3])
mse = np.mean((a - b) ** 2)
print("inf" if mse == 0 else "%.2f" % (10 * np.log10(((1 << bits) - 1) ** 2 / mse)))
PY
    }
    echo
    echo "JPEG 2000 encoder vs opj_compress (OpenJPEG $(opj_compress -h 2>&1 | grep -o 'v[0-9][0-9.]*[0-9]' | head -1)), $runs runs each, all cores"
    declare -gA j2k_speed j2k_size
    for spec in ct:12 mr:16; do
        local img=${spec%%:*} bits=${spec##*:} ours ours_ms opj_ms opj_bytes
        ours=$("$bench" --image "$img" --mode lossless --runs "$runs")
        ours_ms=$(field ms "$ours")
        opj_ms=$(mean_ms opj_compress -i "$dir/$img.pgm" -o "$dir/$img.j2k" -n 6 -b 64,64 -threads ALL_CPUS)
        opj_bytes=$(stat -c %s "$dir/$img.j2k")
        j2k_speed[$img]=$(echo "$opj_ms / $ours_ms" | bc -l)
        j2k_size[$img]=$(echo "$(field bytes "$ours") / $opj_bytes" | bc -l)
        printf '  %s lossless: ours %.1f ms %s bytes | opj_compress %.1f ms %s bytes\n' \
            "$img" "$ours_ms" "$(field bytes "$ours")" "$opj_ms" "$opj_bytes"
    done
    # Lossy 20:1 of the stored (16-bit) bytes; opj_compress -r counts 12-bit samples.
    local ours opj_ms opj_psnr
    ours=$("$bench" --image ct --mode lossy:20 --runs "$runs")
    opj_ms=$(mean_ms opj_compress -i "$dir/ct.pgm" -o "$dir/ct_lossy.j2k" -n 6 -b 64,64 -I -r 15 -threads ALL_CPUS)
    opj_decompress -i "$dir/ct_lossy.j2k" -o "$dir/ct_lossy.pgm" >/dev/null 2>&1
    opj_psnr=$(pgm_psnr "$dir/ct.pgm" "$dir/ct_lossy.pgm" 12)
    j2k_speed[lossy]=$(echo "$opj_ms / $(field ms "$ours")" | bc -l)
    printf '  ct lossy 20:1: ours %.1f ms %s bytes PSNR %s dB | opj_compress %.1f ms %s bytes PSNR %s dB\n' \
        "$(field ms "$ours")" "$(field bytes "$ours")" "$(field psnr "$ours")" \
        "$opj_ms" "$(stat -c %s "$dir/ct_lossy.j2k")" "$opj_psnr"
    ours=$("$bench" --image ct --mode roi:30 --runs "$runs")
    printf '  ct ROI (lesion disk, background 30:1): %.1f ms, ratio %s, ROI exact %s, background PSNR %s dB, shift %s\n' \
        "$(field ms "$ours")" "$(field ratio "$ours")" "$(field roi_exact "$ours")" "$(field bg_psnr "$ours")" "$(field shift "$ours")"
    echo "  ratios (target in brackets):"
    for img in ct mr; do
        printf '    %s lossless speed ours/opj %5.2fx [>= 1.0], size ours/opj %5.3f [<= 1.03]\n' \
            "$img" "${j2k_speed[$img]}" "${j2k_size[$img]}"
    done
    printf '    ct lossy speed ours/opj      %5.2fx [>= 1.0]\n' "${j2k_speed[lossy]}"
}

# Backup jobs beside plain tools (see the header). Needs the strata binary and a corpus; no
# network. Sets backup_ratio[...] for the summary.
backup_section() {
    local dir="$root/.cache/bench-backup" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir"
    local corpus_bytes
    corpus_bytes=$(find "$corpus" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
    site() {   # folder format -> a config with a local archive and a near-line folder
        mkdir -p "$1"
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\npath = "archive"\n[backup]\nnearline_dir = "nearline"\nformat = "%s"\nenqueue_on_receive = true\n[log]\nlevel = "warn"\n' "$2" > "$1/strata.toml"
    }
    secs() {   # command... -> wall-clock seconds; the command's output goes to $dir/last.log
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >"$dir/last.log" 2>&1 || { echo "failed: $*" >&2; cat "$dir/last.log" >&2; return 1; }
        t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc -l
    }
    mbs() { echo "$corpus_bytes / $1 / 1048576" | bc -l; }
    dir_bytes() { find "$@" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}'; }

    site "$dir/site" original
    "$strata" import --config "$dir/site/strata.toml" "${studies[@]}" >/dev/null
    "$strata" tier run --config "$dir/site/strata.toml" --min-age-days 0 >/dev/null
    sync
    local t_backup t_cp t_export t_tar t_verify t_cat t_import t_untar t_roi
    t_backup=$(secs "$strata" backup run --config "$dir/site/strata.toml")
    t_cp=$(secs sh -c "cp -r '$corpus' '$dir/cp' && sync")
    t_export=$(secs "$strata" backup export-volume --config "$dir/site/strata.toml" --out "$dir/volumes" --max-size 1G)
    t_tar=$(secs sh -c "tar cf '$dir/plain.tar' -C '$dir/site' nearline && sync")
    t_verify=$(secs "$strata" verify --config "$dir/site/strata.toml" --volumes "$dir/volumes")
    local checked
    checked=$(dir_bytes "$dir/site/archive" "$dir/site/nearline" "$dir/volumes")
    t_cat=$(secs sh -c "find '$dir/site/archive' '$dir/site/nearline' '$dir/volumes' -type f -exec cat {} + >/dev/null")
    # Disaster recovery: an empty site rebuilt from the volume files alone.
    site "$dir/rebuilt" original
    t_import=$(secs "$strata" backup import-volume --config "$dir/rebuilt/strata.toml" "$dir/volumes"/*.tar)
    local rebuilt
    rebuilt=$(find "$dir/rebuilt/online" -name '*.dcm' | wc -l)
    mkdir -p "$dir/untar"
    t_untar=$(secs sh -c "for v in '$dir/volumes'/*.tar; do tar xf \"\$v\" -C '$dir/untar'; done && sync")
    # ROI copies of the same studies, on a second site that queues studies on receipt.
    site "$dir/site-roi" j2k-roi
    "$strata" import --config "$dir/site-roi/strata.toml" "${studies[@]}" >/dev/null
    t_roi=$(secs "$strata" backup run --config "$dir/site-roi/strata.toml")
    local roi_bytes
    roi_bytes=$(dir_bytes "$dir/site-roi/nearline")

    echo
    echo "Backup jobs ($((corpus_bytes / 1048576)) MiB; same disk, warm cache; wall clock incl. process start)"
    printf '  backup run      %7.1f MB/s   cp -r + sync   %7.1f MB/s\n' "$(mbs "$t_backup")" "$(mbs "$t_cp")"
    printf '  export-volume   %7.1f MB/s   tar cf + sync  %7.1f MB/s\n' "$(mbs "$t_export")" "$(mbs "$t_tar")"
    printf '  verify --volumes %6.1f MB/s of copies checked (%d MiB)   cat %7.1f MB/s\n' \
        "$(echo "$checked / $t_verify / 1048576" | bc -l)" "$((checked / 1048576))" \
        "$(echo "$checked / $t_cat / 1048576" | bc -l)"
    printf '  import-volume into an empty site %7.1f MB/s (%d instances back online)   tar xf + sync %7.1f MB/s\n' \
        "$(mbs "$t_import")" "$rebuilt" "$(mbs "$t_untar")"
    printf '  backup run j2k-roi %7.1f MB/s, copies %d MiB = %.2f of the originals\n' \
        "$(mbs "$t_roi")" "$((roi_bytes / 1048576))" "$(echo "$roi_bytes / $corpus_bytes" | bc -l)"
    declare -gA backup_ratio
    backup_ratio[run]=$(echo "$t_cp / $t_backup" | bc -l)
    backup_ratio[export]=$(echo "$t_tar / $t_export" | bc -l)
    backup_ratio[verify]=$(echo "$t_cat / $t_verify" | bc -l)
    backup_ratio[import]=$(echo "$t_untar / $t_import" | bc -l)
    echo "  ratios (no targets set; >= 1.0 is as fast as the plain tool):"
    printf '    backup run/cp %5.2fx   export-volume/tar %5.2fx   verify/cat %5.2fx   import-volume/tar xf %5.2fx\n' \
        "${backup_ratio[run]}" "${backup_ratio[export]}" "${backup_ratio[verify]}" "${backup_ratio[import]}"
    rm -rf "$dir"
}

# SQLite beside PostgreSQL (see the header). Loopback only; starts and stops its own
# PostgreSQL cluster. Sets locator_ratio[...] for the summary.
locator_section() {
    local dir="$root/.cache/bench-locator" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir"
    # A cluster of its own, apart from the test suite's.
    export STRATA_PG_DIR="/tmp/strata-pg-bench-$$"
    tools/pg-dev.sh start --fresh
    local corpus_bytes
    corpus_bytes=$(find "$corpus" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
    node() {   # folder url node-id online-folder -> a config on port 0
        mkdir -p "$1"
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "%s"\n[locator]\nurl = "%s"\nmax_connections = 16\n[node]\nid = "%s"\n[log]\nlevel = "warn"\n' "$4" "$2" "$3" > "$1/strata.toml"
    }
    serve() {   # folder -> prints the node's port; the pid is kept in $1/pid
        "$strata" serve --config "$1/strata.toml" >"$1/out.log" 2>"$1/err.log" &
        echo $! > "$1/pid"
        # Up to a minute: the first start after fill_locator.py gives its names their search
        # keys, row by row (10 s for 20,000 patients on PostgreSQL).
        for _ in $(seq 1 600); do grep -q listening "$1/out.log" && break; sleep 0.1; done
        grep -o '[0-9]*$' "$1/out.log"
    }
    halt() { kill -TERM "$(cat "$1/pid")"; wait "$(cat "$1/pid")" 2>/dev/null || true; }
    # studies dealt round-robin over the given ports, 4 senders in all
    ingest_mbs() {
        local ports=("$@") t0 t1 senders=()
        t0=$(date +%s.%N)
        for lane in 0 1 2 3; do
            local p=${ports[$((lane % ${#ports[@]}))]}
            (for i in "${!studies[@]}"; do
                if [ $((i % 4)) -eq $lane ]; then
                    TCP_NODELAY=1 /usr/bin/storescu -aet MODALITY -aec STRATA 127.0.0.1 "$p" "${studies[$i]}"/*.dcm >/dev/null 2>&1
                fi
            done) &
            senders+=($!)
        done
        wait "${senders[@]}"
        t1=$(date +%s.%N)
        echo "$corpus_bytes / ($t1 - $t0) / 1048576" | bc -l
    }
    declare -gA locator_ratio find_ms
    local sqlite_mbs pg_mbs two_mbs port port2
    node "$dir/sqlite" "sqlite://locator.db" bench-1 "$dir/sqlite/online"
    port=$(serve "$dir/sqlite"); sqlite_mbs=$(ingest_mbs "$port"); halt "$dir/sqlite"
    node "$dir/pg" "$(tools/pg-dev.sh url bench_one)" bench-1 "$dir/pg/online"
    port=$(serve "$dir/pg"); pg_mbs=$(ingest_mbs "$port"); halt "$dir/pg"
    local two_url
    two_url=$(tools/pg-dev.sh url bench_two)
    node "$dir/two-a" "$two_url" bench-a "$dir/two-online"
    node "$dir/two-b" "$two_url" bench-b "$dir/two-online"
    port=$(serve "$dir/two-a"); port2=$(serve "$dir/two-b")
    two_mbs=$(ingest_mbs "$port" "$port2"); halt "$dir/two-a"; halt "$dir/two-b"
    local stored
    stored=$(find "$dir/two-online" -name '*.dcm' | wc -l)

    # C-FIND on 1,000,000 instances in each locator.
    local find_out="$dir/find.txt"
    : > "$find_out"
    for kind in sqlite pg; do
        local site="$dir/find-$kind" url
        if [ $kind = sqlite ]; then url="sqlite://locator.db"; else url=$(tools/pg-dev.sh url bench_find); fi
        node "$site" "$url" bench-find "$site/online"
        "$strata" status --config "$site/strata.toml" >/dev/null
        if [ $kind = sqlite ]; then
            "$root/.venv/bin/python" tools/fill_locator.py --db "$site/locator.db" >/dev/null
        else
            "$root/.venv/bin/python" tools/fill_locator.py --url "$url" >/dev/null
        fi
        port=$(serve "$site")
        "$root/target/release/examples/find_latency" "127.0.0.1:$port" --aec STRATA --runs 50 \
            "patient-id:PatientID=FILL0001234" "name-MO*:PatientName=MOORE^*" \
            "month:StudyDate=20200301-20200331" | sed "s/^/$kind /" >> "$find_out"
        halt "$site"
    done
    tools/pg-dev.sh stop
    rm -rf "$STRATA_PG_DIR"
    unset STRATA_PG_DIR

    echo
    echo "Locator: SQLite beside PostgreSQL ($((corpus_bytes / 1048576)) MiB corpus, 4 senders; PostgreSQL on a Unix socket, same disk)"
    printf '  ingest one node: SQLite %7.1f MB/s   PostgreSQL %7.1f MB/s   two nodes on PostgreSQL %7.1f MB/s (%d instances stored of %d)\n' \
        "$sqlite_mbs" "$pg_mbs" "$two_mbs" "$stored" "$(find "$corpus" -name '*.dcm' | wc -l)"
    echo "  C-FIND on 1,000,000 instances, STUDY level (find_latency): locator query p50 / p95 ms, matches"
    sed 's/^/    /' "$find_out"
    locator_ratio[ingest]=$(echo "$pg_mbs / $sqlite_mbs" | bc -l)
    locator_ratio[two]=$(echo "$two_mbs / $sqlite_mbs" | bc -l)
    printf '  ratios: one node PostgreSQL/SQLite %5.2fx [>= 0.9]   two nodes PostgreSQL/one node SQLite %5.2fx\n' \
        "${locator_ratio[ingest]}" "${locator_ratio[two]}"
    awk '$1 == "pg" {printf "  PostgreSQL C-FIND %-10s p95 %6.2f ms [%s]\n", $2, $4, ($2 == "patient-id" ? "< 5" : "< 20")}' "$find_out"
    rm -rf "$dir"
}

study_fact() {   # uid | bytes | count of the first study in the manifest
    "$root/.venv/bin/python" - "$corpus/manifest.json" "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); u = m[0]["study_instance_uid"]
s = [x for x in m if x["study_instance_uid"] == u]
print({"uid": u, "bytes": sum(x["size"] for x in s), "count": len(s)}[sys.argv[2]])
PY
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

tls_section() {
    local dir="$root/.cache/bench-tls" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir"
    tools/make-test-certs.sh "$dir/certs" >/dev/null
    local certs="$dir/certs" corpus_bytes
    corpus_bytes=$(find "$corpus" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
    local tls_client=(+tla +cf "$certs/ca.crt")
    local tls_server=(+tls "$certs/server.key" "$certs/server.crt" +cf "$certs/ca.crt")
    sequential_mbs() {   # port [storescu TLS options...]: every study, one association each
        local p=$1 t0 t1
        shift
        t0=$(date +%s.%N)
        for s in "${studies[@]}"; do
            /usr/bin/storescu "$@" -aet MODALITY -aec STRATA 127.0.0.1 "$p" "$s"/*.dcm >/dev/null 2>&1
        done
        t1=$(date +%s.%N)
        echo "$corpus_bytes / ($t1 - $t0) / 1048576" | bc -l
    }
    # Strata: both listeners of one server, each phase on empty storage.
    strata_node() {   # folder dest-port tls-dest-port
        mkdir -p "$1"
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\ntls_listen = "127.0.0.1:0"\ntls_cert = "%s"\ntls_key = "%s"\ntls_ca = "%s"\n[[dicom.peers]]\naet = "DEST"\nhost = "127.0.0.1"\nport = %s\n[[dicom.peers]]\naet = "TLSDEST"\nhost = "127.0.0.1"\nport = %s\ntls = true\n[[dicom.peers]]\naet = "VIEWER"\nhost = "127.0.0.1"\nport = 1\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[log]\nlevel = "warn"\n' \
            "$certs/server.crt" "$certs/server.key" "$certs/ca.crt" "$2" "$3" > "$1/strata.toml"
        "$strata" serve --config "$1/strata.toml" >"$1/out.log" 2>"$1/err.log" &
        echo $! > "$1/pid"
        for _ in $(seq 1 300); do grep -q "tls listening" "$1/out.log" && break; sleep 0.1; done
    }
    halt() { kill -TERM "$(cat "$1/pid")"; wait "$(cat "$1/pid")" 2>/dev/null || true; }
    listening_port() { grep "^$2" "$1/out.log" | grep -o '[0-9]*$'; }   # folder prefix
    local plain_mbs tls_mbs scp_plain scp_tls
    # storescu's default (anonymous) client on Strata's TLS listener: tls_ca is set for the
    # C-MOVE client side, so the listener asks for a certificate; present one.
    local tls_with_cert=(+tls "$certs/client.key" "$certs/client.crt" +cf "$certs/ca.crt")
    strata_node "$dir/plain" 1 1
    plain_mbs=$(sequential_mbs "$(listening_port "$dir/plain" listening)")
    halt "$dir/plain"
    strata_node "$dir/tls" 1 1
    tls_mbs=$(sequential_mbs "$(listening_port "$dir/tls" "tls listening")" "${tls_with_cert[@]}")
    halt "$dir/tls"
    # DCMTK storescp, plain and +tls (it requires a client certificate too).
    scp_run() {   # folder port [options]: storescp until killed
        local f=$1 p=$2
        shift 2
        mkdir -p "$f"
        /usr/bin/storescp "$@" -aet STRATA -od "$f" "$p" >/dev/null 2>&1 &
        echo $! > "$f.pid"
        sleep 0.5
    }
    scp_run "$dir/scp-plain" 11290
    scp_plain=$(sequential_mbs 11290)
    kill "$(cat "$dir/scp-plain.pid")"
    scp_run "$dir/scp-tls" 11291 "${tls_server[@]}"
    scp_tls=$(sequential_mbs 11291 "${tls_with_cert[@]}")
    kill "$(cat "$dir/scp-tls.pid")"
    # C-MOVE of the first study to a storescp destination, plain and over TLS.
    local study_uid study_bytes
    study_uid=$(study_fact uid)
    study_bytes=$(study_fact bytes)
    /usr/bin/storescp --ignore -aet DEST 11292 >/dev/null 2>&1 &
    local dest_pid=$!
    /usr/bin/storescp --ignore "${tls_server[@]}" -aet TLSDEST 11293 >/dev/null 2>&1 &
    local tls_dest_pid=$!
    strata_node "$dir/move" 11292 11293
    local strata_port
    strata_port=$(listening_port "$dir/move" listening)
    /usr/bin/storescu -aet MODALITY -aec STRATA 127.0.0.1 "$strata_port" "${studies[0]}"/*.dcm >/dev/null 2>&1
    move_secs() {   # destination: median of 3 movescu runs, seconds
        for _ in 1 2 3; do
            local t0 t1
            t0=$(date +%s.%N)
            /usr/bin/movescu -v -S -aet VIEWER -aec STRATA -aem "$1" -k QueryRetrieveLevel=STUDY \
                -k "StudyInstanceUID=$study_uid" 127.0.0.1 "$strata_port" >"$dir/move.log" 2>&1
            t1=$(date +%s.%N)
            if ! grep -q "Received Final Move Response (Success)" "$dir/move.log"; then
                echo "C-MOVE to $1 failed:" >&2
                cat "$dir/move.log" >&2
                return 1
            fi
            echo "$t1 - $t0" | bc -l
        done | median
    }
    local move_plain move_tls
    move_plain=$(echo "$study_bytes / $(move_secs DEST) / 1048576" | bc -l)
    move_tls=$(echo "$study_bytes / $(move_secs TLSDEST) / 1048576" | bc -l)
    halt "$dir/move"
    kill "$dest_pid" "$tls_dest_pid" 2>/dev/null || true
    echo
    echo "TLS beside plain DICOM ($((corpus_bytes / 1048576)) MiB, storescu one association per study; TLS 1.3 where both offer it)"
    printf '  C-STORE sequential: Strata plain %6.1f MB/s  TLS %6.1f MB/s  (%4.2fx)   storescp plain %6.1f MB/s  +tls %6.1f MB/s  (%4.2fx)\n' \
        "$plain_mbs" "$tls_mbs" "$(echo "$tls_mbs / $plain_mbs" | bc -l)" "$scp_plain" "$scp_tls" "$(echo "$scp_tls / $scp_plain" | bc -l)"
    printf '  C-MOVE one study (%d MiB) to storescp: plain %6.1f MB/s  TLS %6.1f MB/s  (%4.2fx)\n' \
        "$((study_bytes / 1048576))" "$move_plain" "$move_tls" "$(echo "$move_tls / $move_plain" | bc -l)"
    printf '  ratios: Strata TLS/plain C-STORE %4.2fx [>= 0.8]  C-MOVE %4.2fx [>= 0.8]  Strata TLS/storescp +tls %4.2fx\n' \
        "$(echo "$tls_mbs / $plain_mbs" | bc -l)" "$(echo "$move_tls / $move_plain" | bc -l)" "$(echo "$tls_mbs / $scp_tls" | bc -l)"
    rm -rf "$dir"
}

commit_section() {
    local dir="$root/.cache/bench-commit" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir/node"
    tools/hdfs-dev.sh start "$dir/hdfs" >/dev/null
    local HDFS_URL
    HDFS_URL=$(grep -o 'HDFS_URL=[^ ]*' "$dir/hdfs/env" | head -1 | cut -d= -f2 | tr -d '"')
    printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\nbackend = "hdfs"\npath = "/strata-bench-commit"\nhdfs_url = "%s"\n[log]\nlevel = "info"\n' \
        "$HDFS_URL" > "$dir/node/strata.toml"
    "$strata" serve --config "$dir/node/strata.toml" >"$dir/node/out.log" 2>"$dir/node/err.log" &
    local pid=$! port
    for _ in $(seq 1 300); do grep -q "^listening" "$dir/node/out.log" && break; sleep 0.1; done
    port=$(grep "^listening" "$dir/node/out.log" | grep -o '[0-9]*$')
    local files=("${studies[0]}"/*.dcm)
    /usr/bin/storescu -aet SCANNER -aec STRATA 127.0.0.1 "$port" "${files[@]}" >/dev/null 2>&1
    commit_ms() {   # median of 5 requests for the whole study, ms from N-ACTION to report
        for _ in 1 2 3 4 5; do
            "$root/.venv/bin/python" tools/commit.py request 127.0.0.1 "$port" --aet SCANNER \
                --wait 60 "${files[@]}" >"$dir/commit.log" 2>&1
            if ! grep -q '"event_type": 1' "$dir/commit.log"; then
                echo "commitment failed:" >&2
                cat "$dir/commit.log" >&2
                return 1
            fi
            grep -o 'REPORT_AFTER_MS [0-9.]*' "$dir/commit.log" | cut -d' ' -f2
        done | median
    }
    local online archived
    online=$(commit_ms)
    "$strata" tier run --config "$dir/node/strata.toml" --min-age-days 0 >/dev/null
    archived=$(commit_ms)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    tools/hdfs-dev.sh stop "$dir/hdfs" >/dev/null
    echo
    echo "Storage Commitment of one study (${#files[@]} instances, $(( $(cat "${files[@]}" | wc -c) / 1048576 )) MiB), N-ACTION to N-EVENT-REPORT, median of 5"
    printf '  online %7.1f ms [< 1000]   archived on HDFS %7.1f ms [< 3000]\n' "$online" "$archived"
    rm -rf "$dir"
}

# DICOMweb beside Orthanc's plugin (see the header). Runs inside the namespace (Orthanc binds
# every address). Prints its own ratios.
web_section() {
    local dir="$root/.cache/bench-web" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir"
    local ct_study ct_dir pid_id wport oport dport opid
    ct_study=$(study_fact uid)
    ct_dir=$(dirname "$(grep -l "$ct_study" "${studies[0]}"/*.dcm | head -1)")
    pid_id=$("$root/.venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['patient_id'])" "$corpus/manifest.json")
    tools/hdfs-dev.sh start "$dir/hdfs" >/dev/null
    source "$dir/hdfs/env"
    web_node() {   # folder: a Strata node with an anonymous HTTP listener and an HDFS archive
        mkdir -p "$1"
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\nbackend = "hdfs"\npath = "/strata-web-%s"\nhdfs_url = "%s"\n[web]\nlisten = "127.0.0.1:0"\nallow_anonymous = true\n[log]\nlevel = "warn"\n' \
            "$(basename "$1")" "$HDFS_URL" > "$1/strata.toml"
        "$strata" serve --config "$1/strata.toml" >"$1/out.log" 2>"$1/err.log" &
        echo $! > "$1/pid"
        for _ in $(seq 1 300); do grep -q "^web listening" "$1/out.log" && break; sleep 0.1; done
    }
    halt() { kill -TERM "$(cat "$1/pid")"; wait "$(cat "$1/pid")" 2>/dev/null || true; }
    store_all() {   # aet port: the corpus, 4 storescu at once
        local senders=() lane
        for lane in 0 1 2 3; do
            (for i in "${!studies[@]}"; do
                if [ $((i % 4)) -eq $lane ]; then
                    /usr/bin/storescu -aet MODALITY -aec "$1" 127.0.0.1 "$2" "${studies[$i]}"/*.dcm >/dev/null 2>&1
                fi
            done) &
            senders+=($!)
        done
        wait "${senders[@]}"
    }
    dn_bytes_read() {   # the DataNode's BytesRead counter (its JMX values are cached for 10 s)
        sleep 11
        curl -s "$HDFS_DN_JMX" | "$root/.venv/bin/python" -c 'import json,sys; print(sum(b.get("BytesRead", 0) for b in json.load(sys.stdin)["beans"] if "DataNodeActivity" in b["name"]))'
    }
    declare -A web
    run_bench() {   # name url [bench_web.py options]: fills web[name-measure]
        local name=$1 url=$2 line key
        shift 2
        while read -r line; do
            key=${line%% *}
            web[$name-$key]=${line#* }
            printf '  %-15s %s\n' "$name" "$line"
        done < <("$root/.venv/bin/python" tools/bench_web.py --url "$url" --study "$ct_study" --patient-id "$pid_id" "$@")
    }
    field() { cut -d' ' -f"$1" <<<"$2"; }
    echo
    echo "DICOMweb (tools/bench_web.py): qido p50 p95 ms matches; metadata p50 p95 ms instances; wado-study MB/s bytes; rendered images/s"
    web_node "$dir/strata"
    dport=$(grep '^listening on' "$dir/strata/out.log" | grep -o '[0-9]*$')
    wport=$(grep '^web listening on' "$dir/strata/out.log" | grep -o '[0-9]*$')
    store_all STRATA "$dport"
    run_bench strata "http://127.0.0.1:$wport/dicom-web"

    port=$((port + 1)); oport=$((port + 1000))
    mkdir -p "$dir/orthanc"
    cat > "$dir/orthanc/orthanc.json" <<JSON
{
  "Name": "bench", "StorageDirectory": "$dir/orthanc/storage", "IndexDirectory": "$dir/orthanc/index",
  "DicomAet": "ORTHANC", "DicomPort": $port, "HttpPort": $oport,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "HttpServerEnabled": true,
  "DicomModalities": { "modality": ["MODALITY", "127.0.0.1", 1] },
  "StorageCompression": false, "SyncStorageArea": true,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
JSON
    Orthanc "$dir/orthanc/orthanc.json" >"$dir/orthanc/out.log" 2>&1 &
    opid=$!
    wait_port ORTHANC "$port"
    store_all ORTHANC "$port"
    run_bench orthanc "http://127.0.0.1:$oport/dicom-web"
    kill -TERM "$opid"; wait "$opid" 2>/dev/null || true

    # The study archived on HDFS: /metadata again, and the DataNode read nothing for it.
    "$strata" tier run --config "$dir/strata/strata.toml" --min-age-days 0 >/dev/null
    local read0 read1
    read0=$(dn_bytes_read)
    run_bench strata-archived "http://127.0.0.1:$wport/dicom-web" --only metadata
    read1=$(dn_bytes_read)
    printf '  strata-archived DataNode BytesRead during /metadata: %s\n' "$((read1 - read0))"
    # The control: retrieving the archived study does read the DataNode.
    curl -s -o /dev/null "http://127.0.0.1:$wport/dicom-web/studies/$ct_study"
    printf '  strata-archived DataNode BytesRead during WADO-RS of the study (control): %s\n' "$(($(dn_bytes_read) - read1))"
    halt "$dir/strata"

    # STOW-RS beside C-STORE of the same study, each into an empty node: median of 3.
    local stow=() cstore=() n t0 t1 ct_bytes
    ct_bytes=$(study_fact bytes)
    for n in 1 2 3; do
        web_node "$dir/cstore$n"
        dport=$(grep '^listening on' "$dir/cstore$n/out.log" | grep -o '[0-9]*$')
        t0=$(date +%s.%N)
        /usr/bin/storescu -aet MODALITY -aec STRATA 127.0.0.1 "$dport" "$ct_dir"/*.dcm >/dev/null 2>&1
        t1=$(date +%s.%N)
        cstore+=("$(echo "$ct_bytes / ($t1 - $t0) / 1048576" | bc -l)")
        halt "$dir/cstore$n"
        web_node "$dir/stow$n"
        wport=$(grep '^web listening on' "$dir/stow$n/out.log" | grep -o '[0-9]*$')
        stow+=("$("$root/.venv/bin/python" tools/bench_web.py --url "http://127.0.0.1:$wport/dicom-web" \
            --study "$ct_study" --stow "$ct_dir" | awk '{print $2}')")
        halt "$dir/stow$n"
    done
    local stow_mbs cstore_mbs
    stow_mbs=$(printf '%s\n' "${stow[@]}" | median)
    cstore_mbs=$(printf '%s\n' "${cstore[@]}" | median)
    printf '  strata   STOW-RS %7.1f MB/s   C-STORE (storescu, one association) %7.1f MB/s\n' "$stow_mbs" "$cstore_mbs"
    tools/hdfs-dev.sh stop "$dir/hdfs"

    echo
    echo "DICOMweb ratios (target in brackets):"
    for q in patient-id name-M* year; do
        printf '  QIDO-RS %-10s p95 strata/orthanc %5.2fx  [<= 0.5]\n' "$q" \
            "$(echo "$(field 2 "${web[strata-qido-$q]}") / $(field 2 "${web[orthanc-qido-$q]}")" | bc -l)"
    done
    printf '  /metadata p95: strata online %s ms, archived %s ms; orthanc %s ms  [<= 50 ms]\n' \
        "$(field 2 "${web[strata-metadata]}")" "$(field 2 "${web[strata-archived-metadata]}")" \
        "$(field 2 "${web[orthanc-metadata]}")"
    printf '  archive bytes read by /metadata  %s  [0]\n' "$((read1 - read0))"
    printf '  WADO-RS study MB/s strata/orthanc %5.2fx  [>= 1.5]\n' \
        "$(echo "$(field 1 "${web[strata-wado-study]}") / $(field 1 "${web[orthanc-wado-study]}")" | bc -l)"
    printf '  /rendered images/s strata/orthanc %5.2fx  [>= 1.5]\n' \
        "$(echo "${web[strata-rendered]} / ${web[orthanc-rendered]}" | bc -l)"
    printf '  STOW-RS/C-STORE MB/s             %5.2fx  [>= 0.9]\n' "$(echo "$stow_mbs / $cstore_mbs" | bc -l)"
    rm -rf "$dir"
}

levels_section() {
    local dir="$root/.cache/bench-levels" strata="$root/target/release/strata"
    rm -rf "$dir" && mkdir -p "$dir"
    local ct_study ct_dir
    ct_study=$(study_fact uid)
    ct_dir=$(dirname "$(grep -l "$ct_study" "${studies[0]}"/*.dcm | head -1)")
    levels_node() {   # on|off: (re)starts the node over the same folder
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\nbackend = "local"\npath = "archive"\ncompression = "j2k-lossless"\n[retrieve]\nresolution_levels = %s\n[web]\nlisten = "127.0.0.1:0"\nallow_anonymous = true\n[log]\nlevel = "warn"\n' \
            "$([ "$1" = on ] && echo true || echo false)" > "$dir/strata.toml"
        : > "$dir/out.log"
        "$strata" serve --config "$dir/strata.toml" >"$dir/out.log" 2>"$dir/err.log" &
        echo $! > "$dir/pid"
        for _ in $(seq 1 300); do grep -q "^web listening" "$dir/out.log" && break; sleep 0.1; done
        grep -q "^web listening" "$dir/out.log" || { echo "strata did not start: $(cat "$dir/err.log")" >&2; return 1; }
    }
    halt() { kill -TERM "$(cat "$dir/pid")"; wait "$(cat "$dir/pid")" 2>/dev/null || true; }
    archive_read() {   # bytes every process read from the archive (a server adds its own every 5 s)
        sleep 6
        "$strata" status --config "$dir/strata.toml" --json | "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["bytes_read"]["archive"])'
    }
    declare -A lv
    echo
    echo "Resolution levels (tools/bench_web.py, archived CT study): p50 p95 ms images; archive bytes read per image"
    levels_node on
    local dport wport
    dport=$(grep '^listening on' "$dir/out.log" | grep -o '[0-9]*$')
    /usr/bin/storescu -aet MODALITY -aec STRATA 127.0.0.1 "$dport" "$ct_dir"/*.dcm >/dev/null 2>&1
    halt
    "$strata" tier run --config "$dir/strata.toml" --min-age-days 0 >/dev/null
    local stored mode what before line images
    stored=$("$strata" status --config "$dir/strata.toml" --json | "$root/.venv/bin/python" -c 'import json,sys; s=json.load(sys.stdin); print(s["tiers"]["archive"]["bytes"] / s["tiers"]["archive"]["instances"])')
    printf '  archived: %.0f bytes per instance\n' "$stored"
    for mode in on off; do
        levels_node "$mode"
        wport=$(grep '^web listening on' "$dir/out.log" | grep -o '[0-9]*$')
        for what in thumbnail viewport; do
            before=$(archive_read)
            line=$("$root/.venv/bin/python" tools/bench_web.py --url "http://127.0.0.1:$wport/dicom-web" \
                --study "$ct_study" --only "$what")
            images=$(cut -d' ' -f4 <<<"$line")
            lv[$mode-$what]="$(cut -d' ' -f2,3 <<<"$line") $(( ($(archive_read) - before) / images ))"
            printf '  levels %-3s %-9s %s\n' "$mode" "$what" "${lv[$mode-$what]}"
        done
        halt
    done
    f() { cut -d' ' -f"$1" <<<"${lv[$2]}"; }
    echo
    echo "Resolution levels ratios (target in brackets):"
    printf '  thumbnail bytes read / stored     %5.3f  [<= 0.125]\n' "$(echo "$(f 3 on-thumbnail) / $stored" | bc -l)"
    printf '  thumbnail p50 whole/levels        %5.2fx  [>= 3]\n' "$(echo "$(f 1 off-thumbnail) / $(f 1 on-thumbnail)" | bc -l)"
    printf '  thumbnail p95 whole/levels        %5.2fx\n' "$(echo "$(f 2 off-thumbnail) / $(f 2 on-thumbnail)" | bc -l)"
    printf '  viewport-256 bytes read / stored  %5.3f\n' "$(echo "$(f 3 on-viewport) / $stored" | bc -l)"
    printf '  viewport-256 p50 whole/levels     %5.2fx\n' "$(echo "$(f 1 off-viewport) / $(f 1 on-viewport)" | bc -l)"
    rm -rf "$dir"
}

# The rendition cache: a Zipf replay (tools/bench_renditions.py) over the renditions of the
# corpus's first 2,000 instances (archived with compression = "j2k-lossless"), with no cache, LRU and the value policy, each in a
# cache of 10% of the renditions' total size: mean/p50/p95 latency, hit ratio and server CPU.
renditions_section() {
    local dir="$root/.cache/bench-renditions" strata="$root/target/release/strata"
    local count=2000 requests=20000 ticks
    ticks=$(getconf CLK_TCK)
    rm -rf "$dir" && mkdir -p "$dir"
    renditions_node() {   # cache_mb policy: (re)starts the node over the same folder
        printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\nbackend = "local"\npath = "archive"\ncompression = "j2k-lossless"\n[renditions]\ncache_mb = %s\ndir = "renditions"\npolicy = "%s"\n[web]\nlisten = "127.0.0.1:0"\nallow_anonymous = true\n[log]\nlevel = "warn"\n' \
            "$1" "$2" > "$dir/strata.toml"
        : > "$dir/out.log"
        "$strata" serve --config "$dir/strata.toml" >"$dir/out.log" 2>"$dir/err.log" &
        echo $! > "$dir/pid"
        for _ in $(seq 1 300); do grep -q "^web listening" "$dir/out.log" && break; sleep 0.1; done
        grep -q "^web listening" "$dir/out.log" || { echo "strata did not start: $(cat "$dir/err.log")" >&2; return 1; }
    }
    halt() { kill -TERM "$(cat "$dir/pid")"; wait "$(cat "$dir/pid")" 2>/dev/null || true; }
    counts() {   # hits misses: the locator's sums (a stopped server has added its own)
        "$strata" status --config "$dir/strata.toml" --json | "$root/.venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin)["renditions"]; print(r["hits"], r["misses"])'
    }
    echo
    echo "Rendition cache (tools/bench_renditions.py, Zipf 1.0, $requests requests, 2 clients):"
    renditions_node 0 value
    local dport wport study
    dport=$(grep '^listening on' "$dir/out.log" | grep -o '[0-9]*$')
    for study in "${studies[@]}"; do
        /usr/bin/storescu -aet MODALITY -aec STRATA 127.0.0.1 "$dport" "$study"/*.dcm >/dev/null 2>&1
    done
    halt
    # Archived as JPEG 2000: a full-size image costs a whole decode, a thumbnail its lowest
    # resolutions.
    "$strata" tier run --config "$dir/strata.toml" --min-age-days 0 >/dev/null
    renditions_node 0 value
    wport=$(grep '^web listening on' "$dir/out.log" | grep -o '[0-9]*$')
    local replay=("$root/.venv/bin/python" tools/bench_renditions.py --url "http://127.0.0.1:$wport/dicom-web"
                  --manifest "$corpus/manifest.json" --instances "$count")
    local sizes total n budget
    sizes=$("${replay[@]}" --sizes)
    read -r _ total n <<<"$sizes"
    budget=$(( (total / 10 + 524288) / 1048576 ))
    [ "$budget" -ge 1 ] || budget=1
    printf '  %s renditions, %s bytes; budget %s MiB (%.1f%%)\n' "$n" "$total" "$budget" \
        "$(echo "$budget * 1048576 * 100 / $total" | bc -l)"
    halt
    declare -A rc
    local mode cpu0 line before after
    for mode in none lru value; do
        if [ "$mode" = none ]; then renditions_node 0 value; else renditions_node "$budget" "$mode"; fi
        wport=$(grep '^web listening on' "$dir/out.log" | grep -o '[0-9]*$')
        replay[3]="http://127.0.0.1:$wport/dicom-web"
        before=$(counts)
        cpu0=$(awk '{print $14 + $15}' "/proc/$(cat "$dir/pid")/stat")
        line=$("${replay[@]}" --requests "$requests" --record "$dir/$mode.json")
        local cpu=$(( $(awk '{print $14 + $15}' "/proc/$(cat "$dir/pid")/stat") - cpu0 ))
        halt
        after=$(counts)
        local hits=$(( $(cut -d' ' -f1 <<<"$after") - $(cut -d' ' -f1 <<<"$before") ))
        local misses=$(( $(cut -d' ' -f2 <<<"$after") - $(cut -d' ' -f2 <<<"$before") ))
        rc[$mode]="$(cut -d' ' -f2-4 <<<"$line") $(echo "$hits / ($hits + $misses + 0.000001)" | bc -l) $(echo "$cpu / $ticks" | bc -l)"
        read -r mean p50 p95 ratio secs <<<"${rc[$mode]}"
        printf '  %-5s mean %7.2f ms  p50 %7.2f  p95 %7.2f  hit ratio %.3f  server CPU %6.1f s\n' \
            "$mode" "$mean" "$p50" "$p95" "$ratio" "$secs"
    done
    m() { cut -d' ' -f1 <<<"${rc[$1]}"; }
    # The best any cache of this budget could do with this sequence (each rendition's
    # requests known in advance; a hit as fast as the value run's median).
    local best
    best=$("${replay[@]}" --bound "$dir/none.json" --budget $((budget * 1048576)) \
        --hit-ms "$(cut -d' ' -f2 <<<"${rc[value]}")")
    printf '  bound mean %7.2f ms  hit ratio %.3f  (a cache knowing every request count in advance)\n' \
        "$(cut -d' ' -f2 <<<"$best")" "$(cut -d' ' -f3 <<<"$best")"
    echo
    echo "Rendition cache ratios (target in brackets):"
    printf '  mean latency none/value   %5.2fx  [>= 5]\n' "$(echo "$(m none) / $(m value)" | bc -l)"
    printf '  mean latency lru/value    %5.2fx  [> 1]\n' "$(echo "$(m lru) / $(m value)" | bc -l)"
    printf '  mean latency none/bound   %5.2fx  (the most any policy could reach here)\n' \
        "$(echo "$(m none) / $(cut -d' ' -f2 <<<"$best")" | bc -l)"
    rm -rf "$dir"
}

# Whole-slide import beside libvips (see the header): one generated slide, kept in .cache.
wsi_section() {
    local dir="$root/.cache/bench-wsi" strata="$root/target/release/strata"
    local side=20000 seed=1 tile=256 requests=200
    local src="$root/.cache/wsi-slide-$side-$seed.png"
    rm -rf "$dir" && mkdir -p "$dir"
    if [ ! -f "$src" ]; then
        "$root/.venv/bin/python" tools/gen_slide.py --out "$src.part" --width $side --height $side --seed $seed >/dev/null
        mv "$src.part" "$src"
    fi
    cat "$src" >/dev/null   # both tools start from a warm page cache
    measured() {   # name command...: wall seconds in $dir/name.secs, peak RSS (KiB) in $dir/name.rss
        local name=$1 t0 t1
        shift
        t0=$(date +%s.%N)
        if [ -x /usr/bin/time ]; then
            /usr/bin/time -f %M -o "$dir/$name.rss" "$@" >"$dir/$name.out" 2>"$dir/$name.err" \
                || { echo "failed: $*" >&2; cat "$dir/$name.err" >&2; return 1; }
        else   # VmHWM sampled until the process ends
            "$@" >"$dir/$name.out" 2>"$dir/$name.err" &
            local p=$! hwm=0 v
            while kill -0 "$p" 2>/dev/null; do
                v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
                [ -n "$v" ] && hwm=$v
                sleep 0.05
            done
            wait "$p" || { echo "failed: $*" >&2; cat "$dir/$name.err" >&2; return 1; }
            echo "$hwm" > "$dir/$name.rss"
        fi
        t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc -l > "$dir/$name.secs"
    }
    local bytes=$((side * side * 3))
    mbs() { echo "$bytes / $(cat "$dir/$1.secs") / 1048576" | bc -l; }
    measured vips vips dzsave "$src" "$dir/dz" --tile-size $tile --overlap 0 --suffix ".jpg[Q=90]"
    mkdir -p "$dir/node"
    printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[archive]\nbackend = "local"\npath = "archive"\n[web]\nlisten = "127.0.0.1:0"\nallow_anonymous = true\n[log]\nlevel = "warn"\n' \
        > "$dir/node/strata.toml"
    measured strata "$strata" wsi import --config "$dir/node/strata.toml" --patient-id WSI-BENCH \
        --tile $tile --codec jpeg --quality 90 --json "$src"
    local study series instance frames levels
    read -r study series instance frames levels < <("$root/.venv/bin/python" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["study_instance_uid"], r["series_instance_uid"], r["levels"][0]["sop_instance_uid"], r["levels"][0]["frames"], len(r["levels"]))' "$dir/strata.out")
    wsi_node() {   # starts the node; sets wport
        : > "$dir/node/out.log"
        "$strata" serve --config "$dir/node/strata.toml" >"$dir/node/out.log" 2>"$dir/node/err.log" &
        echo $! > "$dir/node/pid"
        for _ in $(seq 1 300); do grep -q "^web listening" "$dir/node/out.log" && break; sleep 0.1; done
        grep -q "^web listening" "$dir/node/out.log" || { echo "strata did not start: $(cat "$dir/node/err.log")" >&2; return 1; }
        wport=$(grep '^web listening on' "$dir/node/out.log" | grep -o '[0-9]*$')
    }
    halt() { kill -TERM "$(cat "$dir/node/pid")"; wait "$(cat "$dir/node/pid")" 2>/dev/null || true; }
    tiles_p95() {   # p95 ms of level-0 tile fetches
        "$root/.venv/bin/python" tools/bench_tiles.py --url "http://127.0.0.1:$wport/dicom-web" \
            --study "$study" --series "$series" --instance "$instance" --frames "$frames" \
            --requests $requests --codec jpeg | cut -d' ' -f3
    }
    local wport online archived stored
    echo
    echo "Whole slide ($side x $side RGB, $((bytes / 1048576)) MiB of pixels; $tile-pixel JPEG q90 tiles; wall clock incl. process start and PNG decode)"
    printf '  vips dzsave       %7.1f MB/s  (%.1f s, peak RSS %.0f MiB, %d tiles)\n' "$(mbs vips)" \
        "$(cat "$dir/vips.secs")" "$(echo "$(cat "$dir/vips.rss") / 1024" | bc -l)" "$(find "$dir/dz_files" -name '*.jpg' | wc -l)"
    printf '  strata wsi import %7.1f MB/s  (%.1f s, peak RSS %.0f MiB, %d levels, %d level-0 frames)\n' "$(mbs strata)" \
        "$(cat "$dir/strata.secs")" "$(echo "$(cat "$dir/strata.rss") / 1024" | bc -l)" "$levels" "$frames"
    wsi_node
    # The series must be right before its speed counts.
    if ! "$root/.venv/bin/python" tools/wsi_check.py --url "http://127.0.0.1:$wport/dicom-web" --study "$study" \
        --series "$series" --source-width $side --source-height $side --seed $seed --tile $tile \
        --codec jpeg >"$dir/check.log" 2>&1; then
        cat "$dir/check.log" >&2
        halt
        return 1
    fi
    sed 's/^/  wsi_check /' "$dir/check.log"
    online=$(tiles_p95)
    halt
    "$strata" tier run --config "$dir/node/strata.toml" --min-age-days 0 >/dev/null
    stored=$("$strata" status --config "$dir/node/strata.toml" --json | "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["tiers"]["archive"]["instances"])')
    wsi_node
    archived=$(tiles_p95)
    halt
    printf '  level-0 tile p95 (%d random frames, one a request): online %.2f ms, archived %.2f ms (%d instances archived)\n' \
        "$requests" "$online" "$archived" "$stored"
    echo
    echo "Whole slide ratios (target in brackets):"
    printf '  import MB/s strata/vips   %5.2fx  [>= 1.0]\n' "$(echo "$(mbs strata) / $(mbs vips)" | bc -l)"
    printf '  tile p95 online           %6.2f ms [< 20]\n' "$online"
    printf '  tile p95 archived         %6.2f ms [< 60]\n' "$archived"
    printf '  import peak RSS           %6.0f MiB\n' "$(echo "$(cat "$dir/strata.rss") / 1024" | bc -l)"
    rm -rf "$dir"
}

# The generated corpus, made once per size and kept in .cache: sets corpus and studies.
make_corpus() {
    corpus="$root/.cache/bench-corpus-$CT_STUDIES-$CT_IMAGES-$MR_STUDIES-$MR_IMAGES"
    if [ ! -f "$corpus/manifest.json" ]; then
        rm -rf "$corpus"
        "$root/.venv/bin/python" tools/gen_corpus.py --out "$corpus" --ct-studies "$CT_STUDIES" \
            --ct-images "$CT_IMAGES" --mr-studies "$MR_STUDIES" --mr-images "$MR_IMAGES" --seed 7
    fi
    studies=("$corpus"/[0-9]*)
}

if [ -n "$J2K_ONLY" ]; then
    source tools/setup-deps.sh
    install_build_deps
    install_debian libopenjp2-tools bc
    install_venv
    cargo build --release --quiet --example j2k_bench
    j2k_section
    exit 0
fi

# A section run alone over the corpus: its Debian packages, the venv, the strata binary (and
# any example named with --example), TCP_NODELAY for DCMTK, the corpus, then the section.
alone() {   # section [--hdfs] [--example NAME] [debian package...]
    local section=$1 hdfs="" examples=()
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --hdfs) hdfs=1; shift ;;
            --example) examples+=(--example "$2"); shift 2 ;;
            *) break ;;
        esac
    done
    source tools/setup-deps.sh
    install_build_deps
    install_debian bc "$@"
    if [ -n "$hdfs" ]; then tools/hdfs-dev.sh fetch; fi
    install_venv
    cargo build --release --quiet --bin strata "${examples[@]}"
    export TCP_NODELAY=1
    make_corpus
    "$section"
    exit 0
}

if [ -n "$LOCATOR_ONLY" ]; then alone locator_section --example find_latency dcmtk postgresql; fi
if [ -n "$TLS_ONLY" ]; then alone tls_section dcmtk; fi
if [ -n "$COMMIT_ONLY" ]; then alone commit_section --hdfs dcmtk; fi
if [ -n "$LEVELS_ONLY" ]; then alone levels_section dcmtk; fi
if [ -n "$RENDITIONS_ONLY" ]; then alone renditions_section dcmtk; fi
if [ -n "$WSI_ONLY" ]; then alone wsi_section libvips-tools time; fi
if [ -n "$BACKUP_ONLY" ]; then alone backup_section; fi
# Bash abandons a whole compound command on an expansion error and goes on with the next one:
# never fall through from a section run alone into the full benchmark.
if [ -n "$J2K_ONLY$BACKUP_ONLY$LOCATOR_ONLY$TLS_ONLY$COMMIT_ONLY$LEVELS_ONLY$RENDITIONS_ONLY$WSI_ONLY" ]; then echo "a section failed" >&2; exit 1; fi

if [ -z "${STRATA_BENCH_NETNS:-}" ]; then
    source tools/setup-deps.sh
    install_build_deps
    install_debian dcmtk orthanc orthanc-dicomweb iproute2 bc libopenjp2-tools curl libvips-tools time
    tools/hdfs-dev.sh fetch
    install_venv
    cargo build --release --quiet --bins --examples
    exec unshare -n env STRATA_BENCH_NETNS=1 "$0" --ct-studies "$CT_STUDIES" --ct-images "$CT_IMAGES" \
        --mr-studies "$MR_STUDIES" --mr-images "$MR_IMAGES" ${INGEST_ONLY:+--ingest-only} ${WEB_ONLY:+--web-only}
fi
ip link set lo up
export TCP_NODELAY=1   # DCMTK (and Orthanc, built on it) leave Nagle on otherwise

make_corpus
instances=$(find "$corpus" -name '*.dcm' | wc -l)
bytes=$(find "$corpus" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
echo "corpus: ${#studies[@]} studies, $instances instances, $((bytes / 1048576)) MiB"

work="$root/.cache/bench-run"
port=11200
DEST_PORT=11190      # DCMTK storescp --ignore: the C-MOVE destination for throughput
PYDEST_PORT=11191    # tools/bench_retrieve.py's own destination for time to first instance
pid=""

clock_ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }   # utime+stime, self and children
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

wait_port() {   # until C-ECHO answers
    for _ in $(seq 1 200); do
        /usr/bin/echoscu -aet MODALITY -aec "$1" 127.0.0.1 "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server $1 did not come up" >&2
    return 1
}

start_server() {   # name phase [keep] -> sets pid, aet; "keep" restarts on stored data
    local name=$1 dir="$work/$1-$2"
    if [ "${3:-}" != keep ]; then rm -rf "$dir" && mkdir -p "$dir"; fi
    port=$((port + 1))
    case "$name" in
        strata)
            aet=STRATA
            cat > "$dir/strata.toml" <<EOF
[dicom]
aet = "STRATA"
listen = "127.0.0.1:$port"
accept_unknown_callers = true
[[dicom.peers]]
aet = "MODALITY"
host = "127.0.0.1"
port = 1
[[dicom.peers]]
aet = "DEST"
host = "127.0.0.1"
port = $DEST_PORT
[[dicom.peers]]
aet = "PYDEST"
host = "127.0.0.1"
port = $PYDEST_PORT
[storage]
online_dir = "online"
[locator]
url = "sqlite://locator.db"
[log]
level = "warn"
EOF
            "$root/target/release/strata" serve --config "$dir/strata.toml" >"$dir/out.log" 2>"$dir/err.log" &
            ;;
        storescp)
            aet=STORESCP
            mkdir -p "$dir/files"
            # --fork serves associations in parallel (one process each), like the others do.
            /usr/bin/storescp --fork -aet STORESCP -od "$dir/files" "$port" >"$dir/out.log" 2>&1 &
            ;;
        orthanc)
            aet=ORTHANC
            cat > "$dir/orthanc.json" <<EOF
{
  "Name": "bench", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir/index",
  "DicomAet": "ORTHANC", "DicomPort": $port, "HttpPort": $((port + 1000)),
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "HttpServerEnabled": true,
  "DicomModalities": { "modality": ["MODALITY", "127.0.0.1", 1],
                       "dest": ["DEST", "127.0.0.1", $DEST_PORT],
                       "pydest": ["PYDEST", "127.0.0.1", $PYDEST_PORT] },
  "StorageCompression": false, "SyncStorageArea": true, "Plugins": []
}
EOF
            Orthanc "$dir/orthanc.json" >"$dir/out.log" 2>&1 &
            ;;
    esac
    pid=$!
    wait_port "$aet" "$port"
}

stop_server() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

send_study() { /usr/bin/storescu -aet MODALITY -aec "$aet" 127.0.0.1 "$port" "$1"/*.dcm >/dev/null 2>&1; }

# Busy ticks of the whole machine (user, nice, system, irq, softirq): the server's CPU as its
# process sees it leaves out the kernel's writeback threads, which write what storescp (no
# fsync) leaves in the page cache, while a server that syncs pays for its writes itself.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

if [ -n "$WEB_ONLY" ]; then
    web_section
    exit 0
fi
declare -A seq_mbs par_mbs cpu_us machine_us rss_mib
for name in strata storescp orthanc; do
    # Sequential: one association per study.
    start_server "$name" seq
    cpu0=$(cpu_ticks "$pid")
    all0=$(machine_ticks)
    t0=$(date +%s.%N)
    for s in "${studies[@]}"; do send_study "$s"; done
    t1=$(date +%s.%N)
    sync   # what is still in the page cache is written within the measure
    all1=$(machine_ticks)
    cpu1=$(cpu_ticks "$pid")
    rss=$(peak_rss_kib "$pid")
    stop_server
    seq_mbs[$name]=$(echo "$bytes / ($t1 - $t0) / 1048576" | bc -l)
    cpu_us[$name]=$(echo "($cpu1 - $cpu0) * 1000000 / $clock_ticks / $instances" | bc -l)
    machine_us[$name]=$(echo "($all1 - $all0) * 1000000 / $clock_ticks / $instances" | bc -l)

    # Parallel: 4 senders at once.
    start_server "$name" par
    t0=$(date +%s.%N)
    senders=()
    for lane in 0 1 2 3; do
        (for i in "${!studies[@]}"; do
            if [ $((i % 4)) -eq $lane ]; then send_study "${studies[$i]}"; fi
        done) &
        senders+=($!)
    done
    wait "${senders[@]}"
    t1=$(date +%s.%N)
    rss2=$(peak_rss_kib "$pid")
    stop_server
    par_mbs[$name]=$(echo "$bytes / ($t1 - $t0) / 1048576" | bc -l)
    [ "$rss2" -gt "$rss" ] && rss=$rss2
    rss_mib[$name]=$(echo "$rss / 1024" | bc -l)
    printf '%-9s sequential %7.1f MB/s   4 parallel %7.1f MB/s   CPU %6.0f us/instance (machine %6.0f)   peak RSS %6.1f MiB\n' \
        "$name" "${seq_mbs[$name]}" "${par_mbs[$name]}" "${cpu_us[$name]}" "${machine_us[$name]}" "${rss_mib[$name]}"
done

# Group commit: syncs per instance with 4 and 8 associations storing at once.
send_parallel() {   # lanes: every study, dealt round-robin over that many storescu processes
    local lanes=$1 senders=()
    for lane in $(seq 0 $((lanes - 1))); do
        (for i in "${!studies[@]}"; do
            if [ $((i % lanes)) -eq "$lane" ]; then send_study "${studies[$i]}"; fi
        done) &
        senders+=($!)
    done
    wait "${senders[@]}"
}
declare -A syncs_per_instance
if command -v perf >/dev/null; then
    for lanes in 4 8; do
        start_server strata "gc$lanes"
        perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p "$pid" \
            -o "$work/perf-gc$lanes.csv" &
        perf_pid=$!
        sleep 0.5
        t0=$(date +%s.%N)
        send_parallel "$lanes"
        t1=$(date +%s.%N)
        kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
        stop_server
        syncs=$(awk -F, '/sys_enter/ {s += $1} END {print s}' "$work/perf-gc$lanes.csv")
        syncs_per_instance[$lanes]=$(echo "$syncs / $instances" | bc -l)
        printf 'strata %d parallel: %7.1f MB/s, %.2f syncs per instance (%.2f instances per sync)\n' \
            "$lanes" "$(echo "$bytes / ($t1 - $t0) / 1048576" | bc -l)" "${syncs_per_instance[$lanes]}" \
            "$(echo "$instances / $syncs" | bc -l)"
    done
else
    echo "perf not found: group commit not measured"
fi

ingest_ratios() {
    printf '  sequential strata/storescp   %5.2fx  [>= 1.0]\n' "$(echo "${seq_mbs[strata]} / ${seq_mbs[storescp]}" | bc -l)"
    printf '  sequential strata/orthanc    %5.2fx  [>= 2.5]\n' "$(echo "${seq_mbs[strata]} / ${seq_mbs[orthanc]}" | bc -l)"
    printf '  4 parallel strata/storescp   %5.2fx  [>= 1.0]\n' "$(echo "${par_mbs[strata]} / ${par_mbs[storescp]}" | bc -l)"
    printf '  4 parallel strata/orthanc    %5.2fx  [>= 2.0]\n' "$(echo "${par_mbs[strata]} / ${par_mbs[orthanc]}" | bc -l)"
    printf '  CPU/instance strata/storescp %5.2fx  [<= 1.0]  (whole machine, sender and writeback included: %.2fx)\n' \
        "$(echo "${cpu_us[strata]} / ${cpu_us[storescp]}" | bc -l)" "$(echo "${machine_us[strata]} / ${machine_us[storescp]}" | bc -l)"
    printf '  strata peak RSS              %5.1f MiB [<= 64]\n' "${rss_mib[strata]}"
    for lanes in "${!syncs_per_instance[@]}"; do
        printf '  syncs/instance, %d parallel  %5.2f   [< 4: shared]\n' "$lanes" "${syncs_per_instance[$lanes]}"
    done
}
if [ -n "$INGEST_ONLY" ]; then
    echo
    echo "ratios (target in brackets):"
    ingest_ratios
    rm -rf "$work"
    exit 0
fi

# C-FIND latency inside one association, on what each server stored in the parallel phase.
first_pid=$("$root/.venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['patient_id'])" "$corpus/manifest.json")
declare -A find_p95 find_fast_p95
echo
echo "C-FIND inside one association (pynetdicom, Nagle off), 50 runs each: p50 / p95 ms, matches"
for name in strata orthanc; do
    start_server "$name" par keep
    while read -r query p50 p95 matches; do
        printf '  %-8s %-10s %8.2f %8.2f %6s\n' "$name" "$query" "$p50" "$p95" "$matches"
        find_p95[$name-$query]=$p95
    done < <("$root/.venv/bin/python" tools/bench_find.py 127.0.0.1 "$port" --aec "$aet" --runs 50 \
        --query "patient-id:PatientID=$first_pid" --query "name-M*:PatientName=M*" \
        --query "year:StudyDate=20200101-20201231")
    # The same queries with a client that costs microseconds per response (our own DIMSE
    # layer, target/release/examples/find_latency), so the server is what is measured.
    while read -r query p50 p95 matches; do
        printf '  %-8s %-10s %8.2f %8.2f %6s  (find_latency)\n' "$name" "$query" "$p50" "$p95" "$matches"
        find_fast_p95[$name-$query]=$p95
    done < <("$root/target/release/examples/find_latency" "127.0.0.1:$port" --aec "$aet" --runs 50 \
        "patient-id:PatientID=$first_pid" "name-M*:PatientName=M*" "year:StudyDate=20200101-20201231")
    stop_server
done

# C-MOVE and C-GET of one CT study (the first, the largest), on what each server stored in the
# parallel phase. The receiver discards the data (storescp/getscu --ignore), so the sender is
# measured, not the receiver's disk. 3 runs each, median.
ct_study=$(study_fact uid); ct_bytes=$(study_fact bytes); ct_count=$(study_fact count)
mkdir -p "$work/dest"
/usr/bin/storescp --ignore -aet DEST "$DEST_PORT" >"$work/dest/out.log" 2>&1 &
dest_pid=$!
declare -A move_mbs get_mbs first_get first_move
echo
echo "Retrieve of one study ($ct_count instances, $((ct_bytes / 1048576)) MiB): MB/s (median of 3), time to first instance p50 / p95 ms"
for name in strata orthanc; do
    start_server "$name" par keep
    move_t=(); get_t=()
    for _ in 1 2 3; do
        t0=$(date +%s.%N)
        /usr/bin/movescu -S -aet MODALITY -aec "$aet" -aem DEST -k QueryRetrieveLevel=STUDY \
            -k "StudyInstanceUID=$ct_study" 127.0.0.1 "$port" >/dev/null 2>&1
        t1=$(date +%s.%N)
        move_t+=("$(echo "$t1 - $t0" | bc -l)")
        t0=$(date +%s.%N)
        /usr/bin/getscu -S --ignore -aet MODALITY -aec "$aet" -k QueryRetrieveLevel=STUDY \
            -k "StudyInstanceUID=$ct_study" 127.0.0.1 "$port" >/dev/null 2>&1
        t1=$(date +%s.%N)
        get_t+=("$(echo "$t1 - $t0" | bc -l)")
    done
    move_mbs[$name]=$(echo "$ct_bytes / $(printf '%s\n' "${move_t[@]}" | median) / 1048576" | bc -l)
    get_mbs[$name]=$(echo "$ct_bytes / $(printf '%s\n' "${get_t[@]}" | median) / 1048576" | bc -l)
    firsts=$("$root/.venv/bin/python" tools/bench_retrieve.py 127.0.0.1 "$port" --aec "$aet" \
        --study "$ct_study" --dest-port "$PYDEST_PORT" --runs 5)
    read -r _ fg50 fg95 <<<"$(grep first-get <<<"$firsts")"
    read -r _ fm50 fm95 <<<"$(grep first-move <<<"$firsts")"
    first_get[$name]=$fg95; first_move[$name]=$fm95
    printf '  %-8s C-MOVE %7.1f MB/s   C-GET %7.1f MB/s   first instance: C-GET %6.1f / %6.1f ms   C-MOVE %6.1f / %6.1f ms\n' \
        "$name" "${move_mbs[$name]}" "${get_mbs[$name]}" "$fg50" "$fg95" "$fm50" "$fm95"
    stop_server
done
kill -TERM "$dest_pid" 2>/dev/null || true; wait "$dest_pid" 2>/dev/null || true

# Archive tier on a real HDFS (tools/hdfs-dev.sh, inside this namespace): the converter's
# MB/s beside Hadoop's own `FsShell -put` of the same bytes (one file per study, as the
# containers are), and C-MOVE of the first study online, then archived.
hdfs_dir="$work/hdfs"
tools/hdfs-dev.sh start "$hdfs_dir" >/dev/null
source "$hdfs_dir/env"
arch="$work/strata-hdfs"
mkdir -p "$arch"
port=$((port + 1))
cat > "$arch/strata.toml" <<EOF
[dicom]
aet = "STRATA"
listen = "127.0.0.1:$port"
accept_unknown_callers = true
[[dicom.peers]]
aet = "MODALITY"
host = "127.0.0.1"
port = 1
[[dicom.peers]]
aet = "DEST"
host = "127.0.0.1"
port = $DEST_PORT
[storage]
online_dir = "online"
[locator]
url = "sqlite://locator.db"
[archive]
backend = "hdfs"
path = "/strata-bench"
hdfs_url = "$HDFS_URL"
[log]
level = "warn"
EOF
"$root/target/release/strata" import --config "$arch/strata.toml" "${studies[@]}" >/dev/null
"$root/target/release/strata" serve --config "$arch/strata.toml" >"$arch/out.log" 2>"$arch/err.log" &
pid=$!; aet=STRATA
wait_port STRATA "$port"
/usr/bin/storescp --ignore -aet DEST "$DEST_PORT" >"$work/dest/out2.log" 2>&1 &
dest_pid=$!
move_median() {
    local t=()
    for _ in 1 2 3; do
        t0=$(date +%s.%N)
        /usr/bin/movescu -S -aet MODALITY -aec STRATA -aem DEST -k QueryRetrieveLevel=STUDY \
            -k "StudyInstanceUID=$ct_study" 127.0.0.1 "$port" >/dev/null 2>&1
        t1=$(date +%s.%N)
        t+=("$(echo "$t1 - $t0" | bc -l)")
    done
    echo "$ct_bytes / $(printf '%s\n' "${t[@]}" | median) / 1048576" | bc -l
}
move_online=$(move_median)
t0=$(date +%s.%N)
"$root/target/release/strata" tier run --config "$arch/strata.toml" --min-age-days 0 >/dev/null
t1=$(date +%s.%N)
convert_mbs=$(echo "$bytes / ($t1 - $t0) / 1048576" | bc -l)
move_archived=$(move_median)
# strata delete on HDFS (issue #18): one instance of the archived study (its container is
# written again without it), then the whole study, beside the time archiving one study took.
one_uid=$(/usr/bin/dcmdump +P 0008,0018 "${studies[0]}"/0000.dcm | sed 's/.*\[\(.*\)\].*/\1/')
t2=$(date +%s.%N)
"$root/target/release/strata" delete --config "$arch/strata.toml" --instance "$one_uid" >/dev/null
t3=$(date +%s.%N)
"$root/target/release/strata" delete --config "$arch/strata.toml" --study "$ct_study" >/dev/null
t4=$(date +%s.%N)
delete_one=$(echo "$t3 - $t2" | bc -l); delete_study=$(echo "$t4 - $t3" | bc -l)
archive_one=$(echo "($t1 - $t0) / ${#studies[@]}" | bc -l)
kill -TERM "$dest_pid" 2>/dev/null || true; wait "$dest_pid" 2>/dev/null || true
stop_server
# The same bytes through Hadoop's client: one file per study.
mkdir -p "$work/put"
for s in "${studies[@]}"; do cat "$s"/*.dcm > "$work/put/$(basename "$s").bin"; done
t0=$(date +%s.%N)
java -cp "$HDFS_CLASSPATH" org.apache.hadoop.fs.FsShell -put "$work/put" "$HDFS_URL/put-bench" 2>/dev/null
t1=$(date +%s.%N)
put_mbs=$(echo "$bytes / ($t1 - $t0) / 1048576" | bc -l)
files_total=$(tools/hdfs-dev.sh status "$hdfs_dir" | "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["FilesTotal"])')
tools/hdfs-dev.sh stop "$hdfs_dir"
echo
echo "Archive on HDFS ($instances instances, $((bytes / 1048576)) MiB, ${#studies[@]} studies; NameNode files now $files_total)"
printf '  converter %7.1f MB/s   FsShell -put %7.1f MB/s (JVM start included)\n' "$convert_mbs" "$put_mbs"
printf '  C-MOVE of one study: online %7.1f MB/s   archived %7.1f MB/s\n' "$move_online" "$move_archived"
printf '  strata delete of the archived %d-image study: one instance %5.2f s (container rewritten), the study %5.2f s; archiving a study took %5.2f s\n' \
    "$ct_count" "$delete_one" "$delete_study" "$archive_one"

# The same on a locator of 1,000,000 instances in 50,000 studies (index only, no files).
big="$work/strata-1m"
mkdir -p "$big"
printf '[dicom]\naet = "STRATA"\nlisten = "127.0.0.1:0"\naccept_unknown_callers = true\n[storage]\nonline_dir = "online"\n[locator]\nurl = "sqlite://locator.db"\n[log]\nlevel = "warn"\n' > "$big/strata.toml"
"$root/target/release/strata" status --config "$big/strata.toml" >/dev/null
"$root/.venv/bin/python" tools/fill_locator.py --db "$big/locator.db"
"$root/target/release/strata" serve --config "$big/strata.toml" >"$big/out.log" 2>"$big/err.log" &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$big/out.log" && break; sleep 0.1; done
big_port=$(grep -o '[0-9]*$' "$big/out.log")
echo "C-FIND on 1,000,000 instances, STUDY level: p50 / p95 ms, matches"
"$root/.venv/bin/python" tools/bench_find.py 127.0.0.1 "$big_port" --aec STRATA --runs 50 \
    --query "patient-id:PatientID=FILL0001234" --query "name-MO*:PatientName=MOORE^*" \
    --query "month:StudyDate=20200301-20200331" | sed 's/^/  /'
"$root/target/release/examples/find_latency" "127.0.0.1:$big_port" --aec STRATA --runs 50 \
    "patient-id:PatientID=FILL0001234" "name-MO*:PatientName=MOORE^*" \
    "month:StudyDate=20200301-20200331" | sed 's/^/  /; s/$/  (find_latency)/'
t0=$(date +%s.%N)
TCP_NODELAY=1 /usr/bin/findscu -S -aet MODALITY -aec STRATA 127.0.0.1 "$big_port" \
    -k QueryRetrieveLevel=STUDY -k "PatientName=M*" -k StudyDate= -k PatientID= \
    -k StudyInstanceUID= >/dev/null 2>&1 || true
t1=$(date +%s.%N)
printf '  findscu (DCMTK) PatientName=M*, all matches received: %.2f s\n' "$(echo "$t1 - $t0" | bc -l)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

# Every server must really have stored the whole corpus in each phase.
strata_count=$(find "$work/strata-par/online" -name '*.dcm' | wc -l)
storescp_count=$(find "$work/storescp-par/files" -type f | wc -l)
echo "stored in the parallel phase: strata $strata_count, storescp $storescp_count (of $instances)"

ratio() { echo "$1 / $2" | bc -l; }
echo
echo "ratios (target in brackets):"
ingest_ratios
for q in patient-id name-M* year; do
    printf '  C-FIND %-10s p95 strata/orthanc %5.2fx pynetdicom, %5.2fx find_latency [<= 0.5]\n' "$q" \
        "$(ratio "${find_p95[strata-$q]}" "${find_p95[orthanc-$q]}")" \
        "$(ratio "${find_fast_p95[strata-$q]}" "${find_fast_p95[orthanc-$q]}")"
done
printf '  C-MOVE MB/s strata/orthanc   %5.2fx  [>= 1.3]\n' "$(ratio "${move_mbs[strata]}" "${move_mbs[orthanc]}")"
printf '  C-GET MB/s strata/orthanc    %5.2fx  [>= 1.3]\n' "$(ratio "${get_mbs[strata]}" "${get_mbs[orthanc]}")"
printf '  strata first instance p95    C-GET %.1f ms, C-MOVE %.1f ms [<= 50]\n' "${first_get[strata]}" "${first_move[strata]}"
printf '  converter/FsShell -put      %5.2fx  [>= 0.8]\n' "$(ratio "$convert_mbs" "$put_mbs")"
printf '  C-MOVE archived/online      %5.2fx  [>= 0.8]\n' "$(ratio "$move_archived" "$move_online")"
rm -rf "$work"
web_section
levels_section
renditions_section
wsi_section
backup_section
locator_section
tls_section
commit_section
j2k_section
