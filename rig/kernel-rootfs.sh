#!/usr/bin/env bash
# The differential-test guest: a read-only Debian root image with python3 (+ python3-numpy, python3-yaml) for
# the Linux 7.2 IOMMUFD_TEST kernel that rig/kernel/build.sh builds, and a runner that boots that kernel with
# it and runs `python3 -m vfiolab.difftest.guest` on the current sources (docs/oracle.md).
#
# usage: rig/kernel-rootfs.sh [build]            build the root image if missing (cached); print its path
#        rig/kernel-rootfs.sh run IN OUTDIR [ARGS...]
#                                                boot once: IN (scenarios, JSON lines) goes in, OUTDIR receives
#                                                results.jsonl, stderr.txt, dmesg.txt, console.log, status.txt,
#                                                boot-seconds.txt; ARGS go to the guest program
# Cache: $VFIOLAB_CACHE/kernel-rootfs/debootstrap-<key>/ (the unpacked Debian tree, keyed by suite + packages)
# and $VFIOLAB_CACHE/kernel-rootfs/rootfs-<key>.img (the image, keyed by that tree + the guest /init).
# The kernel is the rig's: $VFIOLAB_CACHE/kernel/<key>/bzImage (`make kernel-rig` builds it).
set -euo pipefail
self_dir=$(cd "$(dirname "$0")" && pwd)
. "$self_dir/kernel/common.sh"   # kernel_paths, KDIR, log, debian_mirror (rig/lib.sh)
repo=$(cd "$self_dir/.." && pwd)
GUEST_INIT="$self_dir/kernel_guest/init.sh"
BASE="$VFIOLAB_CACHE/kernel-rootfs"
SUITE=bookworm                   # the host's release: the same Python 3.11 on both sides
PACKAGES=(python3 python3-numpy python3-yaml)
TRIM_VERSION=1                   # bump when trim_tree() changes
mkdir -p "$BASE"

tree_key() { printf '%s\n' "$SUITE" "${PACKAGES[@]}" "trim $TRIM_VERSION" | sha256sum | cut -c1-16; }
image_key() { { tree_key; sha256sum "$GUEST_INIT" | cut -c1-64; } | sha256sum | cut -c1-16; }
TREE="$BASE/debootstrap-$(tree_key)"
IMAGE="$BASE/rootfs-$(image_key).img"

# Host tools: debootstrap (debootstrap) and mke2fs/debugfs (e2fsprogs), installed through apt when missing.
ensure_host_tools() {
  local missing=() p
  for p in debootstrap e2fsprogs qemu-system-x86; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "kernel-rootfs: installing host packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$BASE/apt.log" 2>&1 \
    || { tail -n 20 "$BASE/apt.log" >&2; log "kernel-rootfs: apt-get failed ($BASE/apt.log)"; exit 1; }
}

# What a guest that only runs Python never reads: documentation, locales, apt's caches and lists.
trim_tree() {
  local t=$1
  rm -rf "$t"/usr/share/doc/* "$t"/usr/share/man/* "$t"/usr/share/info/* "$t"/usr/share/locale/* \
         "$t"/var/cache/apt/* "$t"/var/lib/apt/lists/* "$t"/var/log/*
}

build_tree() {
  [ -e "$TREE/.vfiolab-tree-ok" ] && return 0
  ensure_host_tools
  local mirror; mirror=$(debian_mirror)
  log "kernel-rootfs: debootstrap --variant=minbase $SUITE with ${PACKAGES[*]} (mirror $mirror)"
  rm -rf "$TREE.tmp"
  local incl; incl=$(IFS=,; echo "${PACKAGES[*]}")
  debootstrap --variant=minbase --include="$incl" "$SUITE" "$TREE.tmp" "$mirror" >"$BASE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$BASE/debootstrap.log" >&2; log "kernel-rootfs: debootstrap failed ($BASE/debootstrap.log)"; exit 1; }
  trim_tree "$TREE.tmp"
  touch "$TREE.tmp/.vfiolab-tree-ok"
  rm -rf "$TREE"; mv "$TREE.tmp" "$TREE"
}

build_image() {
  [ -s "$IMAGE" ] && return 0
  exec 7>"$BASE/.build-lock"   # one builder at a time; runs only read the finished image
  flock 7
  [ -s "$IMAGE" ] && return 0
  build_tree
  ensure_host_tools
  log "kernel-rootfs: packing $(du -sh "$TREE" | cut -f1) into $IMAGE"
  install -m 0755 "$GUEST_INIT" "$TREE/sbin/vfiolab-init"
  mkdir -p "$TREE/mnt"
  local mb; mb=$(( $(du -sm "$TREE" | cut -f1) * 5 / 4 + 64 ))
  rm -f "$IMAGE.tmp"
  mke2fs -q -t ext4 -O ^has_journal -L vfiolab-root -d "$TREE" "$IMAGE.tmp" "${mb}M" >&2
  mv "$IMAGE.tmp" "$IMAGE"
  for old in "$BASE"/rootfs-*.img; do [ "$old" = "$IMAGE" ] || rm -f "$old"; done
}

# --- one boot -----------------------------------------------------------------------------------------------
TIMEOUT=${VFIOLAB_GUEST_TIMEOUT:-900}
QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 768 -smp 1 -nographic -no-reboot -nodefaults)
APPEND="console=ttyS0 root=/dev/vda ro rootfstype=ext4 rootwait init=/sbin/vfiolab-init panic=-1 loglevel=4 log_buf_len=8M printk.devkmsg=on no_timer_check hugepages=16"

# The per-run disk: the working tree's sources (tracked and new files under src/, as they are now), compiled
# to .pyc here so the guest does not spend TCG seconds compiling, plus the input and the guest's arguments.
make_run_disk() {
  local in=$1 img=$2 stage; shift 2
  stage=$(mktemp -d "$BASE/.stage.XXXXXX")
  mkdir -p "$stage/in" "$stage/out"
  (cd "$repo" && git ls-files -co --exclude-standard -z src | grep -z '\.py$' | xargs -0 tar -cf - ) \
    | tar -xf - -C "$stage"
  "${PY[@]}" -m compileall -q --invalidation-mode unchecked-hash "$stage/src" >/dev/null
  cp "$in" "$stage/in/scenarios.jsonl"
  printf '%s\n' "$*" > "$stage/in/args"
  local mb=$(( $(du -sm "$stage" | cut -f1) * 2 + 64 ))
  mke2fs -q -t ext4 -O ^has_journal -L vfiolab-run -d "$stage" "$img" "${mb}M" >/dev/null
  rm -rf "$stage"
}

boot_once() {
  local img=$1 out=$2 rc=0
  : > "$out/console.log"; : > "$out/status.txt"
  local cmd=("${QEMU[@]}" -serial "file:$out/console.log" -serial "file:$out/status.txt"
             -kernel "$KDIR/bzImage" -append "$APPEND"
             -drive "file=$IMAGE,if=virtio,format=raw,readonly=on"
             -drive "file=$img,if=virtio,format=raw")
  echo "${cmd[*]}" > "$out/qemu-cmd.txt"
  # wall time of the whole boot (QEMU start to power-off), as bash's `time` reports it
  { TIMEFORMAT=%1R; time timeout "$TIMEOUT" "${cmd[@]}" </dev/null >"$out/qemu.log" 2>&1; } \
    2>"$out/boot-seconds.txt" || rc=$?
  if [ $rc -ne 0 ]; then
    log "kernel-rootfs: QEMU failed (exit $rc; 124 = the ${TIMEOUT}s timeout)"; return 1
  fi
  if ! grep -q '^@@exit ' "$out/status.txt"; then
    log "kernel-rootfs: no @@exit from the guest ($(grep -m1 '^@@error' "$out/status.txt" || echo 'no error record'))"
    return 1
  fi
  local f
  for f in results.jsonl stderr.txt dmesg.txt; do
    debugfs -R "dump /out/$f $out/$f" "$img" >/dev/null 2>&1 || true
  done
  [ -s "$out/results.jsonl" ] || { log "kernel-rootfs: no results; guest stderr:"; cat "$out/stderr.txt" >&2 || true; return 1; }
}

run() {
  [ $# -ge 2 ] || { echo "usage: $0 run IN OUTDIR [ARGS...]" >&2; exit 2; }
  local in=$1 out=$2; shift 2
  [ -s "$in" ] || { log "kernel-rootfs: no input at $in"; exit 2; }
  kernel_paths
  [ -s "$KDIR/bzImage" ] || { log "kernel-rootfs: no kernel at $KDIR/bzImage: run \`make kernel-rig\` first"; exit 1; }
  build_image
  mkdir -p "$out"
  local img="$out/run.img" try
  for try in 1 2; do
    rm -f "$img" "$out/results.jsonl"
    make_run_disk "$in" "$img" "$@"
    if boot_once "$img" "$out"; then
      rm -f "$img"
      log "kernel-rootfs: guest done in $(cat "$out/boot-seconds.txt") s ($(sed -n 's/^@@//p' "$out/status.txt" | tr '\n' ';'))"
      return 0
    fi
    log "kernel-rootfs: boot $try failed; console tail:"; tail -n 15 "$out/console.log" >&2 || true
  done
  exit 1
}

case ${1:-build} in
  build) build_image; echo "$IMAGE" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 [build] | run IN OUTDIR [ARGS...]" >&2; exit 2 ;;
esac
