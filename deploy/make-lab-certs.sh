#!/usr/bin/env bash
# Lab certificates for nginx in front of a gr-scos sensor (deploy/nginx/): a test CA,
# a server certificate it signs for the sensor's host names and addresses, and a client
# certificate (PEM and a PKCS#12 bundle for browsers and curl) for mutual TLS.
# For a lab or a test bench only: a fielded sensor gets its server certificate from the
# organisation's CA (or ACME) and its client certificates from the operators' CA.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: make-lab-certs.sh [options] OUTDIR

Writes into OUTDIR (created if missing; keys are readable by their owner only):
  ca.key ca.crt                 the test CA
  server.key server.crt         the server certificate, signed by the CA
  client.key client.crt         the client certificate for mutual TLS, signed by the CA
  client.p12                    the client key, certificate and CA as PKCS#12
  client.p12.password           the random password protecting client.p12

options:
  --host NAME       a DNS name of the server (repeatable)
  --ip ADDRESS      an IP address of the server (repeatable)
                    without --host and --ip: localhost and 127.0.0.1
  --client NAME     common name of the client certificate (default: gr-scos-client)
  --days N          validity of the server and client certificates (default: 825)
  --reuse-ca        keep the CA already in OUTDIR and issue new server and client
                    certificates with it (clients that trust it keep trusting)
  --force           replace the CA already in OUTDIR by a new one
  -h, --help        this message
EOF
}

die() {
    echo "make-lab-certs.sh: $*" >&2
    exit 2
}

hosts=()
ips=()
client_name="gr-scos-client"
days=825
ca_days=3650
reuse_ca=false
force=false
out=""

while [ "$#" -gt 0 ]; do
    case "$1" in
        --host | --ip | --client | --days)
            [ "$#" -ge 2 ] || { usage >&2; die "$1 needs a value"; }
            case "$1" in
                --host) hosts+=("$2") ;;
                --ip) ips+=("$2") ;;
                --client) client_name="$2" ;;
                --days) days="$2" ;;
            esac
            shift 2
            ;;
        --reuse-ca) reuse_ca=true; shift ;;
        --force) force=true; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *)
            [ -z "$out" ] || { usage >&2; die "one OUTDIR only (got '$out' and '$1')"; }
            out="$1"
            shift
            ;;
    esac
done

[ -n "$out" ] || { usage >&2; die "OUTDIR is missing"; }
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive whole number, not '$days'"
# It goes into an openssl -subj string, where / and = would start new attributes.
[[ "$client_name" =~ ^[A-Za-z0-9][A-Za-z0-9\ ._@-]*$ ]] ||
    die "--client '$client_name': letters, digits, space, '.', '_', '@' and '-' only"
if [ "${#hosts[@]}" -eq 0 ] && [ "${#ips[@]}" -eq 0 ]; then
    hosts=(localhost)
    ips=(127.0.0.1)
fi
for host in "${hosts[@]}"; do
    # A DNS name (optionally a leading wildcard label), nothing that could break the
    # openssl configuration line it goes into.
    [[ "$host" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]] ||
        die "--host '$host' is not a DNS name"
done
for ip in "${ips[@]}"; do
    [[ "$ip" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ || ("$ip" =~ ^[0-9A-Fa-f:.]+$ && "$ip" == *:*) ]] ||
        die "--ip '$ip' is not an IPv4 or IPv6 address"
done
if "$reuse_ca" && "$force"; then
    die "--reuse-ca and --force contradict each other"
fi
command -v openssl > /dev/null || die "openssl is not installed (Debian: apt-get install openssl)"

if [ -e "$out/ca.key" ] || [ -e "$out/ca.crt" ]; then
    if "$reuse_ca"; then
        [ -e "$out/ca.key" ] && [ -e "$out/ca.crt" ] ||
            die "--reuse-ca: $out has only one of ca.key and ca.crt"
    elif ! "$force"; then
        die "$out already holds a CA: --reuse-ca to issue new certificates with it, --force to replace it"
    fi
elif "$reuse_ca"; then
    die "--reuse-ca: $out holds no CA (ca.key, ca.crt)"
fi

# Every file written from here on (keys above all) is private to its owner.
umask 077
# Everything is made in a scratch directory and moved into OUTDIR at the end: a
# failure (a bad address, say) leaves OUTDIR as it was.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if "$reuse_ca"; then
    ca_dir="$out"
else
    ca_dir="$work"
fi

# 128 random bits: RFC 5280 serials must be unique per CA, and a re-run must not
# repeat one that clients may have cached.
serial() {
    echo "0x$(openssl rand -hex 16)"
}

# EC P-256 keys: quick to make, and every TLS 1.2 and 1.3 client and browser takes them.
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# issue NAME SUBJECT EXTENSIONS: NAME.key and NAME.crt, signed by the CA.
issue() {
    local name="$1" subject="$2" extensions="$3"
    new_key "$work/$name.key"
    openssl req -new -key "$work/$name.key" -subj "$subject" -out "$work/$name.csr"
    printf '%s\n' "$extensions" > "$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
        -set_serial "$(serial)" -days "$days" -sha256 -extfile "$work/$name.ext" \
        -out "$work/$name.crt" 2> "$work/$name.log" ||
        { cat "$work/$name.log" >&2; die "openssl could not sign the $name certificate"; }
}

if ! "$reuse_ca"; then
    new_key "$work/ca.key"
    # A configuration of our own: the system's openssl.cnf must not add extensions.
    printf '%s\n' \
        "[req]" "distinguished_name = subject" "x509_extensions = ca" "[subject]" "[ca]" \
        "basicConstraints = critical, CA:TRUE, pathlen:0" \
        "keyUsage = critical, keyCertSign, cRLSign" \
        "subjectKeyIdentifier = hash" > "$work/ca.cnf"
    openssl req -x509 -new -config "$work/ca.cnf" -key "$work/ca.key" \
        -subj "/O=gr-scos lab/CN=gr-scos lab CA" -set_serial "$(serial)" \
        -days "$ca_days" -sha256 -out "$work/ca.crt"
    chmod 644 "$work/ca.crt"
fi

san=()
for host in "${hosts[@]}"; do san+=("DNS:$host"); done
for ip in "${ips[@]}"; do san+=("IP:$ip"); done
common_name="${hosts[0]:-${ips[0]}}"

issue server "/O=gr-scos lab/CN=$common_name" "$(
    printf '%s\n' \
        "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = serverAuth" \
        "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid" \
        "subjectAltName = $(IFS=,; echo "${san[*]}")"
)"
issue client "/O=gr-scos lab/CN=$client_name" "$(
    printf '%s\n' \
        "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = clientAuth" \
        "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid"
)"

openssl rand -base64 24 > "$work/client.p12.password"
# The password goes through a file, never the command line (ps shows arguments).
openssl pkcs12 -export -inkey "$work/client.key" -in "$work/client.crt" \
    -certfile "$ca_dir/ca.crt" -name "$client_name" \
    -passout "file:$work/client.p12.password" -out "$work/client.p12"

# Certificates are public (clients need ca.crt); only the keys and client.p12 are private.
chmod 644 "$work/server.crt" "$work/client.crt"
mkdir -p "$out"
if ! "$reuse_ca"; then
    mv "$work/ca.key" "$work/ca.crt" "$out/"
fi
mv "$work/server.key" "$work/server.crt" "$work/client.key" "$work/client.crt" \
    "$work/client.p12" "$work/client.p12.password" "$out/"

echo "make-lab-certs.sh: in $out: CA ca.crt, server.crt for ${san[*]}, client.crt and client.p12 for CN=$client_name"
