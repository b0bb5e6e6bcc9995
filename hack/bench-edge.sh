#!/usr/bin/env bash
# Benchmark of the certpilot edge against nginx from Debian's packages, on this machine, over
# loopback: same ECDSA P-256 certificate, same upstreams, same load tools.
#
# Terminate mode (edge --mode terminate; nginx http with proxy_pass):
#   full TLS handshakes/s   hack/bench-edge handshakes: every request is a new TCP connection,
#                           a full TLS 1.3 handshake (no resumption, X25519 key exchange) and
#                           one proxied request; "full-pq" offers Go's default key exchanges,
#                           so the edge does X25519MLKEM768 and nginx (OpenSSL 3.0) X25519
#   resumed connections/s   wrk with "Connection: close": the same, but wrk resumes TLS
#                           sessions (tickets), so most handshakes are abbreviated
#   proxied requests/s      wrk over keep-alive connections
# Passthrough mode (edge --mode passthrough; nginx stream with ssl_preread), both in front of
# one Go TLS server:
#   connections/s           hack/bench-edge handshakes through the proxy: the TLS handshake and
#                           the request are the upstream's, the proxy reads the ClientHello,
#                           connects and splices
#   MiB/s                   wrk -c8 over keep-alive, GET of 1 MiB
#
# Usage: hack/bench-edge.sh  (or make bench-edge). DURATION, CONNECTIONS, THREADS, ROUNDS
# override the defaults; KINDS picks measurements (full full-pq resumed keepalive passthrough
# passthrough-mib), EDGE_FLAGS adds edge flags (--access-log, --profiling). Installs nginx and
# wrk with apt-get when they are missing (needs root).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
# Each measurement alternates edge and nginx ROUNDS times and reports the median of each, so
# that a burst of other work on the machine does not land on one side only.
ROUNDS=${ROUNDS:-3}

cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
	echo "Installing nginx (with its stream module) and wrk from Debian's packages..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-stream wrk >/dev/null
fi
NGINX=$(command -v nginx)

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/edge" ./cmd/edge
go build -o "$work/bench-edge" ./hack/bench-edge
"$work/bench-edge" cert "$work"
read -r upstream_port edge_port edge_http_port edge_health_port nginx_port \
	tls_upstream_port pass_port pass_http_port pass_health_port nginx_stream_port < <("$work/bench-edge" ports 10 | xargs)

"$work/bench-edge" upstream "127.0.0.1:$upstream_port" &
pids+=($!)
"$work/bench-edge" upstream-tls "127.0.0.1:$tls_upstream_port" "$work" &
pids+=($!)

mkdir -p "$work/challenges"
"$work/edge" --mode terminate --upstream "http://127.0.0.1:$upstream_port" \
	--certificate "$work/cert.pem" --key "$work/key.pem" \
	--challenge-dir "$work/challenges" \
	--https-bind-address "127.0.0.1:$edge_port" --http-bind-address "127.0.0.1:$edge_http_port" \
	--health-bind-address "127.0.0.1:$edge_health_port" --zap-log-level error ${EDGE_FLAGS:-} \
	>"$work/edge.log" 2>&1 &
pids+=($!)
"$work/edge" --mode passthrough --upstream "127.0.0.1:$tls_upstream_port" \
	--challenge-dir "$work/challenges" \
	--https-bind-address "127.0.0.1:$pass_port" --http-bind-address "127.0.0.1:$pass_http_port" \
	--health-bind-address "127.0.0.1:$pass_health_port" --zap-log-level error ${EDGE_FLAGS:-} \
	>"$work/edge-passthrough.log" 2>&1 &
pids+=($!)

cat >"$work/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log error;
events { worker_connections 8192; }
http {
	access_log off;
	client_body_temp_path $work/nginx-body;
	proxy_temp_path $work/nginx-proxy;
	fastcgi_temp_path $work/nginx-fastcgi;
	uwsgi_temp_path $work/nginx-uwsgi;
	scgi_temp_path $work/nginx-scgi;
	upstream backend {
		server 127.0.0.1:$upstream_port;
		keepalive 256;
	}
	server {
		listen 127.0.0.1:$nginx_port ssl http2;
		ssl_certificate $work/cert.pem;
		ssl_certificate_key $work/key.pem;
		ssl_protocols TLSv1.2 TLSv1.3;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto https;
			proxy_set_header X-Forwarded-Host \$host;
		}
	}
}
stream {
	upstream tls_backend {
		server 127.0.0.1:$tls_upstream_port;
	}
	map \$ssl_preread_server_name \$tls_upstream {
		default tls_backend;
	}
	server {
		listen 127.0.0.1:$nginx_stream_port;
		ssl_preread on;
		proxy_pass \$tls_upstream;
	}
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work" &
pids+=($!)

for port in "$edge_port" "$nginx_port" "$pass_port" "$nginx_stream_port"; do
	for _ in $(seq 100); do
		curl -ksf "https://127.0.0.1:$port/" >/dev/null && break
		sleep 0.1
	done
	curl -ksf "https://127.0.0.1:$port/" >/dev/null || { echo "server on port $port did not come up"; cat "$work"/*.log; exit 1; }
done

# rps PORT [wrk args...]: run wrk and print its Requests/sec.
rps() {
	local port=$1
	shift
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" "https://127.0.0.1:$port/" >"$work/wrk.out" 2>&1
	if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
		grep "Non-2xx\|Socket errors" "$work/wrk.out" >&2
	fi
	awk '/Requests\/sec/ {print $2}' "$work/wrk.out"
}

# mibps PORT: wrk over 8 keep-alive connections fetching 1 MiB; prints MiB/s.
mibps() {
	wrk -t"$THREADS" -c8 -d"$DURATION" "https://127.0.0.1:$1/mib" >"$work/wrk.out" 2>&1
	if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
		grep "Non-2xx\|Socket errors" "$work/wrk.out" >&2
	fi
	awk '/Transfer\/sec/ {
		v = $2; unit = substr(v, length(v) - 1); v = substr(v, 1, length(v) - 2)
		if (unit == "GB") v *= 1024; else if (unit == "KB") v /= 1024; else if (unit != "MB") v = 0
		printf "%.1f\n", v
	}' "$work/wrk.out"
}

echo "warming up..."
for port in "$edge_port" "$nginx_port" "$pass_port" "$nginx_stream_port"; do
	DURATION=2s rps "$port" >/dev/null
done

# median VALUES...: the median of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(go version | cut -d' ' -f3)"
echo "bench-edge handshakes 127.0.0.1:PORT $CONNECTIONS $DURATION; wrk -t$THREADS -c$CONNECTIONS -d$DURATION [-H 'Connection: close'] https://127.0.0.1:PORT/; wrk -t$THREADS -c8 -d$DURATION https://127.0.0.1:PORT/mib"
echo "edge and nginx alternated $ROUNDS times; medians"
printf '%-34s %12s %12s %10s\n' "" "edge" "nginx" "edge/nginx"
# full PORT [KEX]: full handshakes per second with the Go client.
full() {
	local result
	result=$("$work/bench-edge" handshakes "127.0.0.1:$1" "$CONNECTIONS" "$DURATION" "${2:-x25519}")
	[ "${result#* }" = 0 ] || echo "  ${result#* } failed connections on port $1" >&2
	echo "${result% *}"
}

for kind in ${KINDS:-full full-pq resumed keepalive passthrough passthrough-mib}; do
	edge_runs=() nginx_runs=()
	for _ in $(seq "$ROUNDS"); do
		case $kind in
		full)
			label="full TLS handshakes/s (X25519)"
			edge_runs+=("$(full "$edge_port")")
			nginx_runs+=("$(full "$nginx_port")")
			;;
		full-pq)
			label="full handshakes/s (Go defaults)"
			edge_runs+=("$(full "$edge_port" go)")
			nginx_runs+=("$(full "$nginx_port" go)")
			;;
		resumed)
			label="resumed TLS connections/s (wrk)"
			edge_runs+=("$(rps "$edge_port" -H "Connection: close")")
			nginx_runs+=("$(rps "$nginx_port" -H "Connection: close")")
			;;
		keepalive)
			label="proxied requests/s (keep-alive)"
			edge_runs+=("$(rps "$edge_port")")
			nginx_runs+=("$(rps "$nginx_port")")
			;;
		passthrough)
			label="passthrough connections/s"
			edge_runs+=("$(full "$pass_port")")
			nginx_runs+=("$(full "$nginx_stream_port")")
			;;
		passthrough-mib)
			label="passthrough MiB/s (1 MiB GETs)"
			edge_runs+=("$(mibps "$pass_port")")
			nginx_runs+=("$(mibps "$nginx_stream_port")")
			;;
		esac
	done
	edge=$(median "${edge_runs[@]}")
	nginx=$(median "${nginx_runs[@]}")
	ratio=$(awk -v a="$edge" -v b="$nginx" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
	printf '%-34s %12s %12s %10s   (edge %s; nginx %s)\n' "$label" "$edge" "$nginx" "$ratio" "${edge_runs[*]}" "${nginx_runs[*]}"
done
