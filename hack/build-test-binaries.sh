#!/usr/bin/env bash
# Builds the real parts the tests run on, from pinned module versions, into bin/ (ignored by git):
#   bin/k8s/{kube-apiserver,kubectl,etcd}   for envtest (KUBEBUILDER_ASSETS=bin/k8s)
#   bin/k8s/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy}
#                                           the node of the single-node cluster (test/cluster)
#   bin/pebble/{pebble,pebble-challtestsrv} Let's Encrypt's test CA and its challenge test server
#   bin/helm/helm                           the Helm CLI that installs the chart on the node
# Each set has a stamp file naming the versions it was built from; a matching stamp skips the build,
# so running this again costs nothing. setup-envtest cannot be used: its downloads need the internet.
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.3}"
# The helm.sh/helm/v3 version of go.mod: the CLI renders the chart as test/install does.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${root}/bin"
work="${bin}/.build"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
mkdir -p "${bin}/k8s" "${bin}/pebble" "${bin}/helm" "${work}"

log() { printf '[build-test-binaries] %s\n' "$*" >&2; }

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && shift 2 && for f in "$@"; do [ -x "$f" ] || return 1; done; }

# --- etcd: a two-file wrapper module, since etcd's own go.mod has replace directives. ---------
build_etcd() {
  local stamp="${bin}/k8s/etcd.stamp" want="etcd ${ETCD_VERSION} $(go env GOVERSION)"
  if stamp_ok "${stamp}" "${want}" "${bin}/k8s/etcd"; then log "etcd ${ETCD_VERSION}: up to date"; return; fi
  log "etcd ${ETCD_VERSION}: building"
  local dir="${work}/etcd"
  rm -rf "${dir}" && mkdir -p "${dir}"
  cat > "${dir}/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "${dir}" && go mod init certpilot.local/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null &&
    go mod tidy >/dev/null &&
    go build -trimpath -ldflags='-s -w' -o "${bin}/k8s/etcd" .)
  echo "${want}" > "${stamp}"
}

# --- kube-apiserver, kubectl and the node's commands: a wrapper module replacing k8s.io/kubernetes' staging modules --
build_kube() {
  # One go build for all of them, so the packages they share compile once. The stamp names the
  # versions; a missing command (a bin/ built before the node's commands were added) rebuilds all.
  local commands=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
  local stamp="${bin}/k8s/kube.stamp" want="kubernetes ${KUBERNETES_VERSION} $(go env GOVERSION)"
  if stamp_ok "${stamp}" "${want}" "${commands[@]/#/${bin}/k8s/}"; then
    log "${commands[*]} ${KUBERNETES_VERSION}: up to date"; return
  fi
  log "${commands[*]} ${KUBERNETES_VERSION}: building (about 13 minutes on 2 cores, 30 with cold caches)"
  local dir="${work}/kube" staging="${KUBERNETES_VERSION/v1./v0.}"
  rm -rf "${dir}" && mkdir -p "${dir}"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  # The staging modules: required at v0.0.0 and replaced by ./staging/... in kubernetes' go.mod.
  local modules
  modules="$(awk '/=> \.\/staging\//{print $1}' "${gomod}" | sort -u | while read -r m; do
    grep -Eq "^[[:space:]]*${m//./\\.} v0\.0\.0" "${gomod}" && echo "${m}"; done)"
  {
    echo "module certpilot.local/kube"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    echo "tool ("
    for c in "${commands[@]}"; do echo "	k8s.io/kubernetes/cmd/${c}"; done
    echo ")"
    echo
    echo "replace ("
    for m in ${modules}; do echo "	${m} => ${m} ${staging}"; done
    echo ")"
  } > "${dir}/go.mod"
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "${dir}" && go mod tidy >/dev/null &&
    go build -trimpath -ldflags="${ldflags}" -o "${bin}/k8s/" \
      "${commands[@]/#/k8s.io/kubernetes/cmd/}")
  echo "${want}" > "${stamp}"
}

# --- Pebble and pebble-challtestsrv ---------------------------------------------------------
# Pebble is built from its module's source with hack/pebble/*.patch applied (each says why): the
# stamp names the patches' contents, so a changed patch rebuilds it.
build_pebble() {
  local patches=("${root}"/hack/pebble/*.patch)
  local stamp="${bin}/pebble/pebble.stamp"
  local want="pebble ${PEBBLE_VERSION} $(go env GOVERSION) $(cat "${patches[@]}" | sha256sum | cut -c1-16)"
  if stamp_ok "${stamp}" "${want}" "${bin}/pebble/pebble" "${bin}/pebble/pebble-challtestsrv"; then
    log "pebble ${PEBBLE_VERSION}: up to date"; return
  fi
  log "pebble ${PEBBLE_VERSION}: building, with ${#patches[@]} patch(es)"
  local module src="${work}/pebble"
  module="$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json "github.com/letsencrypt/pebble/v2@${PEBBLE_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "${module}" ] || { log "pebble ${PEBBLE_VERSION}: go mod download gave no source directory"; exit 1; }
  rm -rf "${src}" && cp -R "${module}" "${src}" && chmod -R u+w "${src}"
  local patch
  for patch in "${patches[@]}"; do
    # Outside any repository (the ceiling stops git at bin/.build): a plain patch of the copy.
    (cd "${src}" && GIT_CEILING_DIRECTORIES="${work}" git apply "${patch}")
  done
  (cd "${src}" && GOBIN="${bin}/pebble" go install -trimpath -ldflags='-s -w' ./cmd/pebble ./cmd/pebble-challtestsrv)
  rm -rf "${src}"
  echo "${want}" > "${stamp}"
}

# --- the Helm CLI ---------------------------------------------------------------------------
build_helm() {
  local stamp="${bin}/helm/helm.stamp" want="helm ${HELM_VERSION} $(go env GOVERSION)"
  if stamp_ok "${stamp}" "${want}" "${bin}/helm/helm"; then log "helm ${HELM_VERSION}: up to date"; return; fi
  log "helm ${HELM_VERSION}: building"
  GOBIN="${bin}/helm" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  echo "${want}" > "${stamp}"
}

what="${1:-all}"
case "${what}" in
  all) build_pebble; build_etcd; build_kube; build_helm ;;
  pebble) build_pebble ;;
  etcd) build_etcd ;;
  kube) build_kube ;;
  helm) build_helm ;;
  *) echo "usage: $0 [all|pebble|etcd|kube|helm]" >&2; exit 2 ;;
esac
