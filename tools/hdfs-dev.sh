#!/usr/bin/env bash
# A real Apache Hadoop 2.7.3 HDFS (one NameNode, one DataNode) on loopback, for tests and
# benchmarks. The server jars come from PyPI's pyspark 2.4.8 source distribution (the only
# registry this machine reaches that carries them); they are cached in .cache/hadoop-jars.
#
#   tools/hdfs-dev.sh start [DIR]   format and start; prints HDFS_URL=..., HDFS_JMX=... (NameNode)
#                                   and HDFS_DN_JMX=... (DataNode)
#   tools/hdfs-dev.sh start-ha [DIR]  an HA pair instead: NameNodes nn1 (active) and nn2
#                                   (standby) of name service ns1 sharing an edits folder,
#                                   one DataNode; prints HDFS_URL=hdfs://ns1, HDFS_CONF_DIR
#                                   (for HADOOP_CONF_DIR), HDFS_JMX_NN1, HDFS_JMX_NN2
#   tools/hdfs-dev.sh haadmin DIR ARGS...  Hadoop's DFSHAAdmin on that pair, e.g.
#                                   `-transitionToActive nn2`, `-getServiceState nn1`
#   tools/hdfs-dev.sh stop  [DIR]   stop the daemons (by PID)
#   tools/hdfs-dev.sh kill-datanode DIR   kill -9 the DataNode (a crash, for the soak)
#   tools/hdfs-dev.sh start-datanode DIR  start it again (same ports and data folder)
#   tools/hdfs-dev.sh status [DIR [N]]  the NameNode's (nnN's) FSNamesystemState as JSON
#   tools/hdfs-dev.sh fetch         only download and cache the jars (and Java)
#
# DIR (default .cache/hdfs-dev) holds conf/, the name and data folders, logs and `env`
# (the variables above and HDFS_CLASSPATH, for scripts to source). Ports are free ones picked
# at start. The HA pair fails over by hand (no ZooKeeper): kill the active NameNode
# (DIR/namenode1.pid) and `haadmin DIR -transitionToActive nn2`.
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

prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

jmx() {   # a NameNode bean as JSON (of nn$1 for an HA pair; $2 names it, FSNamesystemState)
    local http
    http=$(sed -n "s/^HDFS_JMX${1:+_NN$1}=//p" "$dir/env")
    python3 - "$http" "${2:-FSNamesystemState}" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "?qry=Hadoop:service=NameNode,name=" + sys.argv[2], timeout=5) as r:
    print(json.dumps(json.load(r)["beans"][0]))
PY
}

haadmin() {
    java -cp "$dir/conf:$jars/*" org.apache.hadoop.hdfs.tools.DFSHAAdmin "$@"
}

stop() {
    for d in datanode namenode namenode1 namenode2; do
        if [ -f "$dir/$d.pid" ]; then
            kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$(cat "$dir/$d.pid")" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$(cat "$dir/$d.pid")" 2>/dev/null || true
            rm -f "$dir/$d.pid"
        fi
    done
}

log4j() {
    printf 'log4j.rootLogger=WARN,console\nlog4j.appender.console=org.apache.log4j.ConsoleAppender\nlog4j.appender.console.target=System.err\nlog4j.appender.console.layout=org.apache.log4j.PatternLayout\nlog4j.appender.console.layout.ConversionPattern=%%d %%p %%c: %%m%%n\n' > "$1/log4j.properties"
}

# Properties every daemon shares: loopback only, one replica, no web HDFS, no safe-mode wait.
common_props() {
    prop dfs.datanode.data.dir "file://$dir/data"
    prop dfs.datanode.address "127.0.0.1:$xfer"
    prop dfs.datanode.ipc.address "127.0.0.1:$ipc"
    prop dfs.datanode.http.address "127.0.0.1:$dnhttp"
    prop dfs.datanode.hostname 127.0.0.1
    prop dfs.namenode.secondary.http-address "127.0.0.1:0"
    prop dfs.webhdfs.enabled false
    prop dfs.replication 1
    prop dfs.permissions.enabled false
    prop dfs.namenode.safemode.extension 0
    prop dfs.namenode.datanode.registration.ip-hostname-check false
    prop dfs.blocksize 134217728
}

core_site() {   # $1: conf folder, $2: fs.defaultFS
    {
        echo '<?xml version="1.0"?><configuration>'
        prop fs.defaultFS "$2"
        prop hadoop.tmp.dir "$dir/tmp"
        prop io.serializations org.apache.hadoop.io.serializer.WritableSerialization
        echo '</configuration>'
    } > "$1/core-site.xml"
    log4j "$1"
}

daemon() {   # $1: pid file name, $2: conf folder, $3: class, rest: arguments
    local name=$1 conf=$2 class=$3
    shift 3
    nohup java -Xmx512m -cp "$conf:$jars/*" "$class" "$@" >"$dir/logs/$name.log" 2>&1 &
    echo $! > "$dir/$name.pid"
}

give_up() {   # $1: why; prints the logs' tails, stops the daemons, exits 1
    echo "HDFS did not come up ($1); logs in $dir/logs" >&2
    tail -n 20 "$dir"/logs/*.log >&2
    stop
    exit 1
}

check_alive() {   # fails at once when a daemon started here has exited
    local pid
    for pid in "$dir"/*.pid; do
        [ -f "$pid" ] || continue
        kill -0 "$(cat "$pid")" 2>/dev/null || give_up "$(basename "$pid" .pid) exited"
    done
}

wait_up() {   # $1: NameNode number for an HA pair, empty otherwise; $2: wanted HAState
    for _ in $(seq 1 600); do
        check_alive
        state=$(jmx "$1" 2>/dev/null || true)
        if [[ "$state" == *'"NumLiveDataNodes": 1'* && "$state" == *'"FSState": "Operational"'* ]]; then
            [ -z "$2" ] && return 0
            [[ "$(jmx "$1" NameNodeStatus 2>/dev/null || true)" == *"\"State\": \"$2\""* ]] && return 0
        fi
        sleep 0.2
    done
    give_up "NameNode${1:+ nn$1} not ${2:-operational} with its DataNode"
}

fresh() {
    command -v java >/dev/null || install_debian default-jre-headless
    fetch_jars
    [ -d "$dir" ] && stop
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/logs"
    local ports
    ports=$(python3 "$root/tools/free_ports.py" 9)   # reserved: see there
    read -r xfer ipc dnhttp rpc http rpc1 http1 rpc2 http2 <<<"$ports"
    echo "$xfer $ipc $dnhttp" > "$dir/datanode.ports"
}

conf_dir() {   # makes $dir/$1 with the webapps folders the daemons look for
    mkdir -p "$dir/$1"/webapps/{hdfs,datanode,static}
    echo "$dir/$1"
}

case "$cmd" in
start)
    fresh
    conf=$(conf_dir conf)
    mkdir -p "$dir/name"
    core_site "$conf" "hdfs://127.0.0.1:$rpc"
    {
        echo '<?xml version="1.0"?><configuration>'
        common_props
        prop dfs.namenode.name.dir "file://$dir/name"
        prop dfs.namenode.rpc-address "127.0.0.1:$rpc"
        prop dfs.namenode.http-address "127.0.0.1:$http"
        echo '</configuration>'
    } > "$conf/hdfs-site.xml"
    java -cp "$conf:$jars/*" org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive \
        >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; exit 1; }
    daemon namenode "$conf" org.apache.hadoop.hdfs.server.namenode.NameNode
    daemon datanode "$conf" org.apache.hadoop.hdfs.server.datanode.DataNode
    printf 'HDFS_URL=hdfs://127.0.0.1:%s\nHDFS_JMX=http://127.0.0.1:%s/jmx\nHDFS_DN_JMX=http://127.0.0.1:%s/jmx\nHDFS_CLASSPATH=%s\n' \
        "$rpc" "$http" "$dnhttp" "$conf:$jars/*" > "$dir/env"
    wait_up "" ""
    cat "$dir/env"
    ;;
start-ha)
    fresh
    mkdir -p "$dir/name1" "$dir/name2" "$dir/shared"
    # Both NameNodes listen on 127.0.0.1, so each is told which one it is (dfs.ha.namenode.id)
    # in a conf folder of its own; clients and the DataNode use conf/, which names neither.
    for nn in "" 1 2; do
        conf=$(conf_dir "conf${nn:+-nn$nn}")
        core_site "$conf" hdfs://ns1
        {
            echo '<?xml version="1.0"?><configuration>'
            common_props
            prop dfs.nameservices ns1
            prop dfs.ha.namenodes.ns1 nn1,nn2
            prop dfs.namenode.rpc-address.ns1.nn1 "127.0.0.1:$rpc1"
            prop dfs.namenode.rpc-address.ns1.nn2 "127.0.0.1:$rpc2"
            prop dfs.namenode.http-address.ns1.nn1 "127.0.0.1:$http1"
            prop dfs.namenode.http-address.ns1.nn2 "127.0.0.1:$http2"
            prop dfs.namenode.shared.edits.dir "file://$dir/shared"
            prop dfs.client.failover.proxy.provider.ns1 \
                org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider
            prop dfs.ha.fencing.methods 'shell(/bin/true)'
            prop dfs.ha.tail-edits.period 1
            if [ -n "$nn" ]; then
                prop dfs.ha.namenode.id "nn$nn"
                prop dfs.namenode.name.dir "file://$dir/name$nn"
            fi
            echo '</configuration>'
        } > "$conf/hdfs-site.xml"
    done
    java -cp "$dir/conf-nn1:$jars/*" org.apache.hadoop.hdfs.server.namenode.NameNode -format \
        -nonInteractive >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; exit 1; }
    # The standby starts from a copy of the freshly formatted image: what -bootstrapStandby
    # would fetch over HTTP, whose servlet needs commons-httpclient (not in the jar set).
    cp -a "$dir/name1/." "$dir/name2/"
    daemon namenode1 "$dir/conf-nn1" org.apache.hadoop.hdfs.server.namenode.NameNode
    printf 'HDFS_URL=hdfs://ns1\nHDFS_CONF_DIR=%s\nHDFS_JMX_NN1=http://127.0.0.1:%s/jmx\nHDFS_JMX_NN2=http://127.0.0.1:%s/jmx\nHDFS_CLASSPATH=%s\n' \
        "$dir/conf" "$http1" "$http2" "$dir/conf:$jars/*" > "$dir/env"
    daemon namenode2 "$dir/conf-nn2" org.apache.hadoop.hdfs.server.namenode.NameNode
    daemon datanode "$dir/conf" org.apache.hadoop.hdfs.server.datanode.DataNode
    for i in $(seq 1 600); do
        check_alive
        jmx 1 >/dev/null 2>&1 && jmx 2 >/dev/null 2>&1 && break
        [ "$i" = 600 ] && give_up "the NameNodes' web servers did not answer"
        sleep 0.2
    done
    haadmin -transitionToActive nn1 >"$dir/logs/haadmin.log" 2>&1 \
        || { cat "$dir/logs/haadmin.log" >&2; stop; exit 1; }
    wait_up 1 active
    wait_up 2 standby
    cat "$dir/env"
    ;;
haadmin)
    shift 2
    haadmin "$@"
    ;;
stop) stop ;;
kill-datanode)
    [ -f "$dir/datanode.pid" ] && kill -9 "$(cat "$dir/datanode.pid")" 2>/dev/null || true
    rm -f "$dir/datanode.pid"
    ;;
start-datanode)
    [ -f "$dir/datanode.pid" ] && kill -0 "$(cat "$dir/datanode.pid")" 2>/dev/null && exit 0
    # Its ports were free since the kill: still ours for another 30 minutes.
    read -ra dnports < "$dir/datanode.ports"
    python3 "$root/tools/free_ports.py" --renew "${dnports[@]}"
    daemon datanode "$dir/conf" org.apache.hadoop.hdfs.server.datanode.DataNode
    ;;
fetch)
    command -v java >/dev/null || install_debian default-jre-headless
    fetch_jars
    ;;
status) jmx "${3:-}" ;;
*) echo "usage: $0 start|start-ha|stop|status|haadmin|fetch|kill-datanode|start-datanode [DIR]" >&2; exit 2 ;;
esac
