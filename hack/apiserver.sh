#!/usr/bin/env bash
# Builds and runs a real kube-apiserver (with Debian's etcd) on 127.0.0.1 for tests.
#
#   hack/apiserver.sh build        build bin/kube-apiserver if missing or stale
#   hack/apiserver.sh start DIR    start etcd + kube-apiserver with state in DIR,
#                                  print DIR/kubeconfig once /readyz is ok
#   hack/apiserver.sh stop DIR     stop what `start DIR` started (DIR/pids)
#
# Env: APISERVER_READY_TIMEOUT (seconds, default 90).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MODDIR=$ROOT/hack/kube-apiserver
BIN=$ROOT/bin/kube-apiserver
READY_TIMEOUT=${APISERVER_READY_TIMEOUT:-90}

log() { echo "apiserver.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# need CMD PKG: install Debian package PKG when CMD is missing (fresh machines).
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	log "$1 not found, installing Debian package $2"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "$2" >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; } ||
		die "could not install $2"
	command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 still missing"
}

build() {
	need etcd etcd-server
	command -v go >/dev/null 2>&1 || die "go not found in PATH"
	if [[ -x $BIN && $BIN -nt $MODDIR/go.mod && $BIN -nt $MODDIR/go.sum ]]; then
		log "$BIN is up to date"
		return 0
	fi
	local version major minor tmp
	version=$(cd "$MODDIR" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
	IFS=. read -r major minor _ <<<"${version#v}"
	# Without these the binary reports v0.0.0-master (kube's own build sets them too).
	local pkg=k8s.io/component-base/version
	local ldflags="-X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	log "building kube-apiserver $version (first build takes several minutes)"
	mkdir -p "$(dirname "$BIN")"
	tmp=$BIN.tmp.$$
	# Build to a temp name and rename, so a concurrent `start` never sees half a file.
	(cd "$MODDIR" && go build -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver) ||
		{ rm -f "$tmp"; die "go build failed"; }
	mv -f "$tmp" "$BIN"
	log "built $BIN"
}

# alive PID: process exists and is not a zombie (an exited process stays a
# zombie until init reaps it, which can take seconds in some containers).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# owned PID DIR: the process's command line mentions DIR, so a recycled PID of
# some unrelated process is never signalled.
owned() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"; }

# Three distinct free loopback ports, chosen by the kernel. All sockets stay
# open until all are picked; the small window until etcd/apiserver bind them
# is covered by the retry in start().
free_ports() {
	python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))'
}

# term_wait PID DIR: SIGTERM, wait up to 30 s, then SIGKILL. The processes are
# not children of this shell, so `wait` cannot be used: poll instead.
term_wait() {
	local pid=$1 dir=$2 i
	alive "$pid" && owned "$pid" "$dir" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for 30s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.5
}

stop_dir() {
	local dir=$1 pid
	[[ -f $dir/pids ]] || return 0
	# Reverse start order, one by one: an apiserver whose etcd is already gone
	# spends ~10 s retrying before it exits.
	for pid in $(tac "$dir/pids"); do
		term_wait "$pid" "$dir"
	done
	rm -f "$dir/pids"
	rm -rf "$dir/etcd" # WAL files are preallocated at 64 MiB; logs and certs are kept
}

# One attempt to bring up etcd + apiserver. Returns 2 on a port clash (retry).
launch() {
	local dir=$1 etcd_port peer_port api_port deadline pid
	read -r etcd_port peer_port api_port < <(free_ports)
	local etcd_url=http://127.0.0.1:$etcd_port

	etcd --name test --data-dir "$dir/etcd" --logger zap --log-level warn \
		--listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "test=http://127.0.0.1:$peer_port" \
		>"$dir/etcd.log" 2>&1 </dev/null &
	echo $! >>"$dir/pids"

	# ServiceAccount admission is off: without kube-controller-manager no
	# "default" ServiceAccount exists and every Pod create would be refused.
	# NodeRestriction pairs with the Node authorizer. The endpoint reconciler
	# refuses a loopback --advertise-address, and nothing here needs the
	# "kubernetes" Service's endpoints, so it is off.
	"$BIN" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
		--endpoint-reconciler-type=none \
		--secure-port="$api_port" \
		--cert-dir="$dir/certs" \
		--tls-cert-file="$dir/certs/apiserver.crt" \
		--tls-private-key-file="$dir/certs/apiserver.key" \
		--etcd-servers="$etcd_url" \
		--authorization-mode=Node,RBAC \
		--token-auth-file="$dir/tokens.csv" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$dir/certs/sa.pub" \
		--service-account-signing-key-file="$dir/certs/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--enable-admission-plugins=NodeRestriction \
		--disable-admission-plugins=ServiceAccount \
		--profiling=false \
		>"$dir/apiserver.log" 2>&1 </dev/null &
	echo $! >>"$dir/pids"

	cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$dir/certs/apiserver.crt")
users:
- name: admin
  user:
    token: $(cut -d, -f1 "$dir/tokens.csv")
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
EOF

	deadline=$((SECONDS + READY_TIMEOUT))
	while ((SECONDS < deadline)); do
		if [[ $(curl -s --max-time 2 --cacert "$dir/certs/apiserver.crt" \
			"https://127.0.0.1:$api_port/readyz" 2>/dev/null) == ok ]]; then
			return 0
		fi
		while read -r pid; do
			if ! alive "$pid"; then
				grep -qs 'address already in use' "$dir/etcd.log" "$dir/apiserver.log" && return 2
				log "process $pid exited early"
				return 1
			fi
		done <"$dir/pids"
		sleep 0.5
	done
	log "kube-apiserver not ready after ${READY_TIMEOUT}s"
	return 1
}

start() {
	local dir=$1 attempt rc
	[[ -x $BIN ]] || die "$BIN missing: run '$0 build' first"
	need etcd etcd-server
	need openssl openssl
	need curl curl
	need python3 python3
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	[[ ! -s $dir/pids ]] || die "$dir/pids exists: already started? run '$0 stop $dir'"
	mkdir -p "$dir/certs"

	# Service-account token signing key pair.
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/certs/sa.key" 2>/dev/null
	openssl pkey -in "$dir/certs/sa.key" -pubout -out "$dir/certs/sa.pub" 2>/dev/null
	# Self-signed serving cert for 127.0.0.1; the kubeconfig trusts it as its CA.
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
		-keyout "$dir/certs/apiserver.key" -out "$dir/certs/apiserver.crt" 2>/dev/null
	# Static token file: token,user,uid,"groups".
	echo "$(openssl rand -hex 24),admin,admin,\"system:masters\"" >"$dir/tokens.csv"

	for attempt in 1 2 3; do
		rc=0
		launch "$dir" || rc=$?
		[[ $rc -eq 0 ]] && { echo "$dir/kubeconfig"; return 0; }
		if [[ $rc -eq 2 ]]; then
			log "port clash on attempt $attempt, retrying with new ports"
		else
			log "start failed; last lines of the logs:"
			tail -n 20 "$dir/etcd.log" "$dir/apiserver.log" >&2 || true
		fi
		stop_dir "$dir"
		[[ $rc -eq 2 ]] || exit 1
	done
	die "could not find free ports after 3 attempts"
}

case ${1:-} in
build) build ;;
start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
stop)
	[[ $# -eq 2 ]] || die "usage: $0 stop DIR"
	[[ -d $2 ]] || die "$2 is not a directory"
	stop_dir "$(cd "$2" && pwd -P)"
	;;
*) die "usage: $0 build | start DIR | stop DIR" ;;
esac
