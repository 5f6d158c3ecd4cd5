#!/usr/bin/env bash
# A real Apache Hadoop 2.7.3 HDFS (one NameNode, one DataNode) on loopback, for tests and
# benchmarks. The server jars come from PyPI's pyspark 2.4.8 source distribution (the only
# registry this machine reaches that carries them); they are cached in .cache/hadoop-jars.
#
#   tools/hdfs-dev.sh start [DIR]   format and start; prints HDFS_URL=... and HDFS_JMX=...
#   tools/hdfs-dev.sh stop  [DIR]   stop the daemons (by PID)
#   tools/hdfs-dev.sh status [DIR]  the NameNode's FSNamesystemState as JSON
#   tools/hdfs-dev.sh fetch         only download and cache the jars (and Java)
#
# DIR (default .cache/hdfs-dev) holds conf/, the name and data folders, logs and `env`
# (the two variables above, for scripts to source). Ports are free ones picked at start.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/tools/setup-deps.sh"
cmd=${1:-}
dir=$(realpath -m "${2:-$root/.cache/hdfs-dev}")
jars="$root/.cache/hadoop-jars"

fetch_jars() {
    [ -f "$jars/.complete" ] && return 0
    echo "fetching Hadoop 2.7.3 jars from PyPI (pyspark 2.4.8 sdist, about 220 MB, once)" >&2
    local work="$root/.cache/pyspark-download"
    rm -rf "$work" && mkdir -p "$work"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --disable-pip-version-check wheel "setuptools<70"
    # No build isolation: an isolated build of this sdist fails on pypandoc.
    "$work/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-build-isolation \
        pyspark==2.4.8 -d "$work/dl"
    rm -rf "$jars" && mkdir -p "$jars"
    tar -xzf "$work"/dl/pyspark-2.4.8.tar.gz -C "$work" --wildcards 'pyspark-2.4.8/deps/jars/*.jar'
    local src="$work/pyspark-2.4.8/deps/jars"
    for pattern in 'hadoop-common-*' 'hadoop-hdfs-*' 'hadoop-auth-*' 'hadoop-annotations-*' \
        'guava-14*' 'protobuf-java-2.5*' 'htrace-core-*' 'commons-cli-*' 'commons-codec-*' \
        'commons-collections-3*' 'commons-configuration-*' 'commons-io-*' 'commons-lang-2*' \
        'commons-logging-*' 'commons-math3-*' 'commons-net-*' 'commons-compress-*' \
        'commons-beanutils-*' 'jackson-core-asl-*' 'jackson-mapper-asl-*' 'jackson-jaxrs-*' \
        'jackson-xc-*' 'jetty-6*' 'jetty-util-6*' 'log4j-1*' 'slf4j-api-*' 'slf4j-log4j12-*' \
        'netty-3*' 'netty-all-*' 'xercesImpl-*' 'xmlenc-*' 'jsr305-*' 'javax.servlet-api-*' \
        'javax.ws.rs-api-*' 'leveldbjni-all-*' 'avro-1*'; do
        cp $src/$pattern "$jars/" 2>/dev/null || { echo "missing jar $pattern" >&2; exit 1; }
    done
    rm -rf "$work"
    touch "$jars/.complete"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

jmx() {   # NameNode FSNamesystemState bean as JSON
    local http
    http=$(sed -n 's/^HDFS_JMX=//p' "$dir/env")
    python3 - "$http" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "?qry=Hadoop:service=NameNode,name=FSNamesystemState", timeout=5) as r:
    print(json.dumps(json.load(r)["beans"][0]))
PY
}

stop() {
    for d in datanode namenode; do
        if [ -f "$dir/$d.pid" ]; then
            kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$(cat "$dir/$d.pid")" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$(cat "$dir/$d.pid")" 2>/dev/null || true
            rm -f "$dir/$d.pid"
        fi
    done
}

case "$cmd" in
start)
    command -v java >/dev/null || install_debian default-jre-headless
    fetch_jars
    [ -d "$dir" ] && stop
    rm -rf "$dir"
    mkdir -p "$dir"/conf/webapps/{hdfs,datanode,static} "$dir/name" "$dir/data" "$dir/logs"
    rpc=$(free_port); http=$(free_port); xfer=$(free_port); ipc=$(free_port); dnhttp=$(free_port)
    {
        echo '<?xml version="1.0"?><configuration>'
        prop fs.defaultFS "hdfs://127.0.0.1:$rpc"
        prop hadoop.tmp.dir "$dir/tmp"
        prop io.serializations org.apache.hadoop.io.serializer.WritableSerialization
        echo '</configuration>'
    } > "$dir/conf/core-site.xml"
    {
        echo '<?xml version="1.0"?><configuration>'
        prop dfs.namenode.name.dir "file://$dir/name"
        prop dfs.datanode.data.dir "file://$dir/data"
        prop dfs.namenode.rpc-address "127.0.0.1:$rpc"
        prop dfs.namenode.http-address "127.0.0.1:$http"
        prop dfs.namenode.secondary.http-address "127.0.0.1:0"
        prop dfs.datanode.address "127.0.0.1:$xfer"
        prop dfs.datanode.ipc.address "127.0.0.1:$ipc"
        prop dfs.datanode.http.address "127.0.0.1:$dnhttp"
        prop dfs.datanode.hostname 127.0.0.1
        prop dfs.webhdfs.enabled false
        prop dfs.replication 1
        prop dfs.permissions.enabled false
        prop dfs.namenode.safemode.extension 0
        prop dfs.namenode.datanode.registration.ip-hostname-check false
        prop dfs.blocksize 134217728
        echo '</configuration>'
    } > "$dir/conf/hdfs-site.xml"
    printf 'log4j.rootLogger=WARN,console\nlog4j.appender.console=org.apache.log4j.ConsoleAppender\nlog4j.appender.console.target=System.err\nlog4j.appender.console.layout=org.apache.log4j.PatternLayout\nlog4j.appender.console.layout.ConversionPattern=%%d %%p %%c: %%m%%n\n' > "$dir/conf/log4j.properties"
    cp="$dir/conf:$jars/*"
    java -cp "$cp" org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive \
        >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; exit 1; }
    nohup java -Xmx512m -cp "$cp" org.apache.hadoop.hdfs.server.namenode.NameNode \
        >"$dir/logs/namenode.log" 2>&1 &
    echo $! > "$dir/namenode.pid"
    nohup java -Xmx512m -cp "$cp" org.apache.hadoop.hdfs.server.datanode.DataNode \
        >"$dir/logs/datanode.log" 2>&1 &
    echo $! > "$dir/datanode.pid"
    printf 'HDFS_URL=hdfs://127.0.0.1:%s\nHDFS_JMX=http://127.0.0.1:%s/jmx\nHDFS_CLASSPATH=%s\n' \
        "$rpc" "$http" "$cp" > "$dir/env"
    for _ in $(seq 1 600); do
        state=$(jmx 2>/dev/null || true)
        if [[ "$state" == *'"NumLiveDataNodes": 1'* && "$state" == *'"FSState": "Operational"'* ]]; then
            cat "$dir/env"
            exit 0
        fi
        sleep 0.2
    done
    echo "HDFS did not come up; logs in $dir/logs" >&2
    tail -20 "$dir/logs/namenode.log" "$dir/logs/datanode.log" >&2
    stop
    exit 1
    ;;
stop) stop ;;
fetch)
    command -v java >/dev/null || install_debian default-jre-headless
    fetch_jars
    ;;
status) jmx ;;
*) echo "usage: $0 start|stop|status|fetch [DIR]" >&2; exit 2 ;;
esac
