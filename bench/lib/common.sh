# Shared start-up of the bench/ scripts (sourced, not run): tools, test PKI, the issuer and its
# token, the mcp-edge config under test, /proc readers, machine line. Loopback only.
#
#   source bench/lib/common.sh
#   bench_pki "$work/pki"          # CA, two server certs (ECDSA P-256), issuer key, JWKS, $TOKEN
#   bench_edge_config PORT BACKEND CERT_DIR JWKS [EXTRA_TOML] > edge.toml
#
# Every key is made at run time under the caller's work directory; none is committed.

BENCH_ISS=${BENCH_ISS:-https://idp.bench.example}
BENCH_ORIGIN=${BENCH_ORIGIN:-https://app.example.com}
BENCH_KID=${BENCH_KID:-bench-es256-1}

# The request of every tools/call load: a stateless 2026-07-28 call of the allowed tool `add`.
BENCH_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
BENCH_H=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream'
         -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: add')

# bench_need TOOL:PACKAGE...: install the Debian packages of the tools that are missing.
bench_need() {
  local want=() t
  for t in "$@"; do command -v "${t%%:*}" >/dev/null 2>&1 || want+=("${t#*:}"); done
  (( ${#want[@]} )) || return 0
  echo "installing: ${want[*]}" >&2
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${want[@]}" >/dev/null \
    || { echo "could not install ${want[*]}" >&2; return 1; }
  # Debian's nginx package may start the system service: this harness runs its own instances.
  if [[ " ${want[*]} " == *" nginx "* ]] && [ -s /run/nginx.pid ]; then
    echo "stopping the system nginx the package started (pid $(cat /run/nginx.pid))" >&2
    $sudo nginx -s stop 2>/dev/null || $sudo kill "$(cat /run/nginx.pid)" 2>/dev/null || true
  fi
}

# bench_build CARGO_ARGS...: cargo build --release of what a script runs. build.rs records the
# commit (and rebuilds when HEAD moves); pinning MCP_EDGE_COMMIT to the last commit that changed
# the code keeps a commit of results or bench/ files from costing a full rebuild.
bench_build() {
  export MCP_EDGE_COMMIT=${MCP_EDGE_COMMIT:-$(git log -1 --format=%h --abbrev=12 -- src Cargo.toml Cargo.lock build.rs 2>/dev/null)}
  cargo build --release --quiet "$@"
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# bench_pki DIR: writes DIR/{ca.pem, server.pem/.key, server-b.pem/.key, issuer.key,
# issuer.pub.pem, jwks.json} and sets TOKEN (ES256, kid, aud = $BENCH_PUBLIC/mcp).
# Needs BENCH_PUBLIC (the mcp-edge public_url, e.g. https://localhost:18444).
bench_pki() {
  local d=$1 n
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=mcp-edge bench CA" -days 365 -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
  # Two server certificates with the same names: bench/run.sh rotates between them.
  for n in server server-b; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$n.key" 2>/dev/null
    openssl req -new -key "$d/$n.key" -subj "/CN=localhost" -out "$d/$n.csr" 2>/dev/null
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
      -days 365 -extfile "$d/ext.cnf" -out "$d/$n.pem" 2>/dev/null
  done
  [ -s "$d/server.pem" ] && [ -s "$d/server-b.pem" ] || { echo "bench_pki: openssl failed" >&2; return 1; }
  # ES256 issuer: JWKS with the public point (uncompressed 0x04 || x || y: the DER's last 65 bytes).
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/issuer.key" 2>/dev/null
  openssl ec -in "$d/issuer.key" -pubout -out "$d/issuer.pub.pem" 2>/dev/null
  local pt x y
  pt=$(openssl ec -in "$d/issuer.key" -pubout -outform DER 2>/dev/null | tail -c 65 | xxd -p | tr -d '\n')
  x=$(printf '%s' "${pt:2:64}" | xxd -r -p | b64url)
  y=$(printf '%s' "${pt:66:64}" | xxd -r -p | b64url)
  printf '{"keys":[{"kty":"EC","crv":"P-256","kid":"%s","use":"sig","alg":"ES256","x":"%s","y":"%s"}]}\n' \
    "$BENCH_KID" "$x" "$y" >"$d/jwks.json"
  TOKEN=$(bench_token "$d/issuer.key" "${BENCH_PUBLIC:?}/mcp" "mcp:tools")
}

# bench_token KEY AUD SCOPE: an ES256 JWT (typ JWT, kid) signed with openssl, ten years valid.
bench_token() {
  local key=$1 aud=$2 scope=$3 now hdr pay sig rs raw tmp
  tmp=$(mktemp -d)
  now=$(date +%s)
  hdr=$(printf '{"alg":"ES256","typ":"JWT","kid":"%s"}' "$BENCH_KID" | b64url)
  pay=$(printf '{"iss":"%s","aud":"%s","sub":"bench-user","org":"acme","scope":"%s","iat":%d,"exp":%d}' \
    "$BENCH_ISS" "$aud" "$scope" "$now" $((now + 10 * 365 * 86400)) | b64url)
  printf '%s.%s' "$hdr" "$pay" >"$tmp/in"
  openssl dgst -sha256 -sign "$key" -out "$tmp/sig.der" "$tmp/in"
  # DER ECDSA-Sig-Value -> raw r||s (32 bytes each), as JWS wants.
  rs=$(openssl asn1parse -inform DER -in "$tmp/sig.der" | awk -F: '/INTEGER/{print $NF}')
  raw=$(for v in $rs; do printf '%064s' "$v" | tr ' ' 0; done)
  sig=$(printf '%s' "$raw" | xxd -r -p | b64url)
  rm -rf "$tmp"
  printf '%s.%s.%s' "$hdr" "$pay" "$sig"
}

# bench_edge_config PORT BACKEND_ADDR CERT_DIR JWKS [EXTRA_TOML]: the mcp-edge config under test
# on stdout (CERT_DIR holds server.pem and server.key). Route /mcp: ES256 JWT from a JWKS file (scope mcp:tools), Origin check, Streamable
# HTTP inspection, a policy rule allowing the tool `add`; route /open: the Origin check only (the
# same request, token and all, is accepted there without being verified).
bench_edge_config() {
  local port=$1 backend=$2 certs=$3 jwks=$4 extra=${5:-}
  cat <<TOML
[listener]
bind = "127.0.0.1:$port"
public_url = "${BENCH_PUBLIC:?}"
allowed_hosts = ["localhost", "127.0.0.1"]
# One client address (loopback) opens every stream: the per-address cap is turned off.
max_connections = 9500
max_connections_per_ip = 9500
[listener.tls]
cert = "$certs/server.pem"
key = "$certs/server.key"
[certs]
watch = true
[upstream]
pool_max_idle_per_host = 512
[log]
level = "warn"
[auth]
organisation_claim = "org"
[[auth.issuers]]
issuer = "$BENCH_ISS"
algorithms = ["ES256"]
jwks_file = "$jwks"

[[routes]]
path = "/open"
upstream = "http://$backend/mcp"
allowed_origins = ["$BENCH_ORIGIN"]

[[routes]]
path = "/mcp"
upstream = "http://$backend/mcp"
transport = "streamable-http"
allowed_origins = ["$BENCH_ORIGIN"]
[routes.auth]
require = "token"
scopes = ["mcp:tools"]
[routes.policy]
methods = ["initialize", "ping", "notifications/*", "tools/*", "resources/*"]
[[routes.policy.rules]]
name = "bench"
allow_tools = ["add"]
resource_prefixes = ["memory://{org}/"]
$extra
TOML
}

# bench_wait_port PORT [TRIES]: wait until something accepts on 127.0.0.1:PORT (0.1 s a try).
bench_wait_port() {
  local i
  for i in $(seq "${2:-150}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# bench_sum FILE AWK PID...: the AWK program's number from /proc/PID/FILE, summed over PIDs (a
# process that is gone counts 0).
bench_sum() {
  local file=$1 prog=$2 p s=0 v; shift 2
  for p in "$@"; do
    v=$(awk "$prog" "/proc/$p/$file" 2>/dev/null) || v=0
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
# bench_ticks PID...: utime+stime (clock ticks, /proc/PID/stat fields 14+15) summed over PIDs.
bench_ticks() { bench_sum stat '{sub(/.*\) /, ""); print $12 + $13}' "$@"; }
# bench_rss PID...: VmRSS in KiB summed over PIDs.
bench_rss() { bench_sum status '/^VmRSS/{print $2}' "$@"; }

# median: of the numbers on stdin, one a line.
bench_median() { sort -g | awk '{v[NR]=$1} END{ if (!NR) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }

bench_machine() {
  echo "$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)"
}

# The commit measured: short HEAD, plus "+dirty" when src/, bench/ (but RESULTS.md) or the Cargo
# files differ from it.
bench_commit() {
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench Cargo.toml Cargo.lock ':!bench/RESULTS.md' 2>/dev/null || echo '+dirty')"
}
