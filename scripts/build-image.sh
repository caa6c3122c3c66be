#!/usr/bin/env bash
# Builds the container image from the Dockerfile with podman, on a debian:12 base made
# locally with debootstrap (no registry needed), then runs it against a tiny zoo and answers
# a twin-client request from outside the container.
#
#   scripts/build-image.sh                 # base (once), build, run, check
#   scripts/build-image.sh base            # only the debian:12 base image
#   scripts/build-image.sh build           # base if missing, then the image
#   scripts/build-image.sh run             # run the built image and check it answers
#
# Environment:
#   IMAGE=twin-merging:0.1.0     the image's tag
#   VARIANT=cpu                  the Dockerfile's VARIANT (cuda needs TORCH_DIR, see there)
#   BASE=localhost/debian:12     the base image's tag (the Dockerfile's DEBIAN_IMAGE)
#   MIRROR=http://deb.debian.org/debian   the Debian mirror for debootstrap and apt
#   WORK=build-image             folder for the rootfs, the ccache and the tiny zoo
#   BUILD_DIR=build              a host build with twin-zoo and twin-client (for "run")
#   PORT=50071 METRICS_PORT=9171 the ports the container listens on (host network)
#
# Why these flags: podman's default runtime crun refuses a cgroup v1 host, so every podman
# call uses Debian's runc; the default container ulimits are not permitted to an unprivileged
# kernel namespace here, so nofile and nproc are set explicitly; --network=host because
# rootful bridge networking needs netavark/iptables set-up a build machine may not have.
# Needs root (debootstrap and rootful podman); installs podman, buildah, runc and
# debootstrap from Debian when they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-twin-merging:0.1.0}"
BASE="${BASE:-localhost/debian:12}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WORK="${WORK:-$ROOT/build-image}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
PORT="${PORT:-50071}"
METRICS_PORT="${METRICS_PORT:-9171}"
VARIANT="${VARIANT:-cpu}"
STEP="${1:-all}"

PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap and rootful podman)"

ensure_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      fuse-overlayfs uidmap >/dev/null
  fi
}

# debian:12 from debootstrap. The official image's apt sources are deb822
# (/etc/apt/sources.list.d/debian.sources, with -updates and -security); the Dockerfile's CUDA
# stage edits that file, so the base gets the same layout.
build_base() {
  if "${PODMAN[@]}" image exists "$BASE"; then
    log "$BASE exists (podman rmi $BASE to make it anew)"
    return
  fi
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs" && mkdir -p "$rootfs"
  log "debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  rm -f "$rootfs/etc/apt/sources.list"
  local security="${MIRROR%/debian}/debian-security"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # As in the official image: no package lists, no apt cache in the layer.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  log "importing the rootfs as $BASE"
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

build_image() {
  "${PODMAN[@]}" image exists "$BASE" || build_base
  log "podman build -t $IMAGE (a Release build inside the image: about 20 minutes on 2 cores)"
  local t0=$SECONDS
  # buildah 1.28 (Debian 12's) skips stages it thinks unused before it expands the ARG in
  # "FROM build-${VARIANT}", so it never builds build-cpu and then looks for an image of that
  # name. The Dockerfile goes in with the variant's stage names written out; nothing else
  # changes (its VARIANT argument is then unused).
  local dockerfile="$WORK/Dockerfile.$VARIANT"
  sed -e "s/^FROM build-\${VARIANT} /FROM build-$VARIANT /" \
      -e "s/^FROM runtime-\${VARIANT} /FROM runtime-$VARIANT /" "$ROOT/Dockerfile" >"$dockerfile"
  grep -q "^FROM build-$VARIANT AS build$" "$dockerfile" &&
    grep -q "^FROM runtime-$VARIANT AS runtime$" "$dockerfile" ||
    die "the Dockerfile no longer selects its stages with FROM build-/runtime-\${VARIANT}"
  "${PODMAN[@]}" build --network=host "${LIMITS[@]}" \
    --build-arg DEBIAN_IMAGE="$BASE" --build-arg VARIANT="$VARIANT" \
    -t "$IMAGE" -f "$dockerfile" "$ROOT"
  log "built $IMAGE in $((SECONDS - t0)) s; $("${PODMAN[@]}" image inspect "$IMAGE" \
    --format '{{.Size}}') bytes"
}

run_image() {
  "${PODMAN[@]}" image exists "$IMAGE" || die "no image $IMAGE: run scripts/build-image.sh build"
  local b
  for b in twin-zoo twin-merge twin-client; do
    [[ -x $BUILD_DIR/bin/$b ]] || die "needs $b in $BUILD_DIR/bin (cmake --build $BUILD_DIR)"
  done
  local zoo="$WORK/zoo"
  CONTAINER="twin-image-check-$$"
  local name="$CONTAINER"
  rm -rf "$zoo" && mkdir -p "$zoo"
  log "tiny zoo and its artifacts in $zoo"
  OPENBLAS_NUM_THREADS=1 "$BUILD_DIR/bin/twin-zoo" --out "$zoo/work" \
    --store "file://$zoo/store" >/dev/null
  OPENBLAS_NUM_THREADS=1 "$BUILD_DIR/bin/twin-merge" --config "$zoo/work/merge.yaml" --quiet
  mkdir -p "$zoo/cache" && chown -R 10001:10001 "$zoo/cache"
  chmod -R a+rX "$zoo/store"

  log "running $IMAGE as $name (gRPC on $PORT, metrics on $METRICS_PORT)"
  "${PODMAN[@]}" run -d --name "$name" --network=host "${LIMITS[@]}" --read-only \
    -v "$zoo/store:/var/lib/twin/store:ro" -v "$zoo/cache:/var/cache/twin" --tmpfs /tmp \
    "$IMAGE" --config /etc/twin/server.yaml \
    --listen "0.0.0.0:$PORT" --metrics_listen "0.0.0.0:$METRICS_PORT" \
    --admin_listen 127.0.0.1:0 >/dev/null
  trap '"${PODMAN[@]}" logs "$CONTAINER" >"$WORK/server.log" 2>&1 || true;
        "${PODMAN[@]}" rm -f -t 30 "$CONTAINER" >/dev/null 2>&1 || true' EXIT

  local deadline=$((SECONDS + 300))
  until "$BUILD_DIR/bin/twin-client" --target "127.0.0.1:$PORT" --timeout_ms 2000 health \
    >/dev/null 2>&1; do
    "${PODMAN[@]}" container exists "$name" &&
      [[ $("${PODMAN[@]}" inspect "$name" --format '{{.State.Running}}') == true ]] ||
      { "${PODMAN[@]}" logs "$name" >&2 || true; die "the container exited"; }
    ((SECONDS < deadline)) || { "${PODMAN[@]}" logs "$name" >&2; die "not SERVING after 300 s"; }
    sleep 1
  done
  log "SERVING; an Infer from outside the container:"
  "$BUILD_DIR/bin/twin-client" --target "127.0.0.1:$PORT" --timeout_ms 5000 \
    infer --text "the image answers from outside" | tee "$WORK/infer.txt"
  grep -q . "$WORK/infer.txt" || die "empty reply"
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -m1 '^twin_requests_total' ||
    die "no twin_requests_total on the metrics port"
  log "health inside the container (the image's HEALTHCHECK command):"
  "${PODMAN[@]}" exec "$name" twin-client --target "127.0.0.1:$PORT" --timeout_ms 2000 health
  log "SIGTERM: the server drains and exits 0"
  "${PODMAN[@]}" stop -t 30 "$name" >/dev/null
  local rc
  rc="$("${PODMAN[@]}" inspect "$name" --format '{{.State.ExitCode}}')"
  [[ $rc == 0 ]] || { "${PODMAN[@]}" logs "$name" >&2; die "exit code $rc after SIGTERM"; }
  log "ok: $IMAGE built, served, answered and stopped cleanly"
}

mkdir -p "$WORK"
ensure_tools
case "$STEP" in
  base) build_base ;;
  build) build_image ;;
  run) run_image ;;
  all) build_image && run_image ;;
  *) die "unknown step $STEP (base | build | run | all)" ;;
esac
