#!/usr/bin/env bash
# Makes a development CA and one certificate per identity, for mTLS between
# iommuctl/orchestrators, the broker and the agents. Not for production: the
# CA key sits next to the certificates, unencrypted.
#
# Identities are SPIFFE IDs in the certificate's SAN URI:
#   spiffe://<trust-domain>/broker
#   spiffe://<trust-domain>/agent/<node>
#   spiffe://<trust-domain>/operator/<name>
#   spiffe://<trust-domain>/tenant/<id>
#
# Usage:
#   deploy/make-dev-certs.sh --out DIR [--trust-domain iommu.local] [--days 30]
#       [--agent NODE]... [--tenant ID]... [--operator NAME]... [--no-defaults]
# Writes DIR/ca.crt, DIR/ca.key and, per identity, DIR/<role>[-<name>].crt/.key
# (broker.crt, agent-node-a.crt, operator-admin.crt, tenant-acme.crt). Always
# makes broker and operator-admin unless --no-defaults. Re-running keeps an existing CA (so old
# certificates stay valid) and re-issues the leaf certificates: that is how a
# rotation is rehearsed.
set -euo pipefail

out=""
td="iommu.local"
days=30
agents=()
tenants=()
operators=(admin)
defaults=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --trust-domain) td="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --agent) agents+=("$2"); shift 2 ;;
    --tenant) tenants+=("$2"); shift 2 ;;
    --operator) operators+=("$2"); shift 2 ;;
    --no-defaults) defaults=0; operators=("${operators[@]:1}"); shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-dev-certs: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$out" ]; then echo "make-dev-certs: --out DIR is required" >&2; exit 2; fi
name_re='^[a-z0-9]([a-z0-9._-]{0,62})$'
if ! [[ "$td" =~ ^[a-z0-9.-]+$ ]]; then
  echo "make-dev-certs: --trust-domain: lower-case letters, digits, '.' and '-' only" >&2; exit 2
fi
for n in "${agents[@]}" "${tenants[@]}" "${operators[@]}"; do
  if ! [[ "$n" =~ $name_re ]]; then
    echo "make-dev-certs: name '$n': 1-63 of [a-z0-9._-], starting with a letter or digit" >&2
    exit 2
  fi
done
command -v openssl >/dev/null || { echo "make-dev-certs: needs openssl" >&2; exit 1; }

mkdir -p "$out"
umask 077
if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -days $((days * 4)) -subj "/O=iommu-broker dev/CN=iommu-broker dev CA ($td)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi

# issue FILE-STEM SPIFFE-PATH
issue() {
  local stem="$1" path="$2"
  local ext
  ext="$(mktemp)"
  cat >"$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=URI:spiffe://$td/$path,DNS:localhost,IP:127.0.0.1,IP:::1
EXT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/O=iommu-broker dev/CN=${path//\//:}" -keyout "$out/$stem.key" -out "$out/$stem.csr" \
    2>/dev/null
  openssl x509 -req -in "$out/$stem.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$out/$stem.crt" 2>/dev/null
  rm -f "$out/$stem.csr" "$ext"
  echo "  $out/$stem.crt  spiffe://$td/$path"
}

echo "make-dev-certs: CA $out/ca.crt, trust domain $td"
if [ "$defaults" = 1 ]; then issue broker broker; fi
for n in "${agents[@]}"; do issue "agent-$n" "agent/$n"; done
for n in "${operators[@]}"; do issue "operator-$n" "operator/$n"; done
for n in "${tenants[@]}"; do issue "tenant-$n" "tenant/$n"; done
chmod 0644 "$out"/*.crt
