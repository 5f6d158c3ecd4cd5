#!/usr/bin/env bash
# Makes a throwaway PKI for DICOM TLS tests with openssl, in DIR (created):
#   ca.crt/.key            the test CA
#   server.crt/.key        CN=strata, SAN localhost and 127.0.0.1, server and client use
#   client.crt/.key        CN=MODALITY, a client certificate signed by the CA
#   untrusted.crt/.key     a client certificate signed by another CA (other-ca.crt)
#   expired.crt/.key       a client certificate signed by the CA, valid only in January 2020
# Keys are ECDSA P-256, unencrypted. Usage: tools/make-test-certs.sh DIR
set -euo pipefail
dir="${1:?usage: $0 DIR}"
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

ca() { # name subject
    key "$1"
    openssl req -x509 -new -key "$1.key" -subj "$2" -days 3650 -out "$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

leaf() { # name subject ca usage [san]
    key "$1"
    local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$4"
    [ -n "${5:-}" ] && ext="$ext
subjectAltName=$5"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 825 \
        -extfile <(echo "$ext") -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
}

ca ca "/CN=Strata test CA"
ca other-ca "/CN=Another CA"
# The server's certificate also identifies it as a client (C-MOVE to peers over TLS).
leaf server "/CN=strata" ca serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
leaf client "/CN=MODALITY" ca clientAuth
leaf untrusted "/CN=INTRUDER" other-ca clientAuth

# An expired client certificate: `openssl ca` is the tool that sets dates in the past.
key expired
openssl req -new -key expired.key -subj "/CN=EXPIRED" -out expired.csr
mkdir -p ca-db && : > ca-db/index.txt && echo 1000 > ca-db/serial
cat > ca-db/openssl.cnf <<CNF
[ca]
default_ca = test
[test]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
CNF
openssl ca -batch -config ca-db/openssl.cnf -cert ca.crt -keyfile ca.key -in expired.csr \
    -startdate 20200101000000Z -enddate 20200201000000Z -extensions client -out expired.crt \
    2>/dev/null
rm -rf ca-db expired.csr ./*.srl
echo "test certificates in $dir"
