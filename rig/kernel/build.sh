#!/usr/bin/env bash
# Linux 7.2 with IOMMUFD_TEST as the uAPI oracle: build the kernel (tinyconfig + rig/kernel/iommufd.config),
# its uAPI headers, the iommufd and iommufd_fail_nth selftests (static), a busybox initramfs, then boot it
# under QEMU q35 (TCG) once per selftest with rig/kernel/run-selftest.sh, which caches the TAP and results.
# Cache: $VFIOLAB_CACHE/kernel/<key>/ (key = source version + fragment; docs/kernel-rig.md).  Every step is
# stamped; with a complete cache this returns in well under a second.  Not a rig/build-*.sh on purpose: a
# cold build takes 10+ minutes, so `make rigs` must not run it (`make kernel-rig` does).
set -euo pipefail
. "$(dirname "$0")/common.sh"
t0=$SECONDS

bash "$repo/rig/fetch-kernel-source.sh" >/dev/null
kernel_paths
OUT="$KDIR/build"
mkdir -p "$KDIR"
exec 9>"$KDIR/.build-lock"   # one builder per key; runs lock their own directory
flock 9

NICE=(nice -n 10)   # the machine is shared: the kernel and selftest builds yield to interactive work
HOST_DEPS=(flex bison bc make gcc libc6-dev libelf-dev libssl-dev libcap-dev busybox-static cpio qemu-system-x86)

# Install the host build dependencies that are missing (only called when something must be built).
deps_checked=""
ensure_host_deps() {
  [ -n "$deps_checked" ] && return 0
  deps_checked=1
  local missing=() p
  for p in "${HOST_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "kernel: installing host packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  mkdir -p "$KDIR/logs"
  { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$KDIR/logs/apt.log" 2>&1 \
    || { log "kernel: apt-get failed; tail of $KDIR/logs/apt.log:"; tail -n 20 "$KDIR/logs/apt.log" >&2; exit 1; }
}

# Run a kbuild target in $OUT, output to $KDIR/logs/<name>.log; on failure show its tail and stop.
kmake() {
  local name=$1; shift
  mkdir -p "$KDIR/logs"
  if ! "${NICE[@]}" make -C "$SRC" O="$OUT" "$@" >"$KDIR/logs/$name.log" 2>&1; then
    log "kernel: make $* failed; tail of $KDIR/logs/$name.log:"
    tail -n 30 "$KDIR/logs/$name.log" >&2
    exit 1
  fi
}

# --- configuration ------------------------------------------------------------------------------------------
# Every CONFIG_X=v line of the fragment must be in .config as is; every "# CONFIG_X is not set" must be unset.
check_config() {
  local cfg=$1 bad=0 line opt
  while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
      opt=${BASH_REMATCH[1]}
      grep -qxF "$line" "$cfg" && continue
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      opt=${BASH_REMATCH[1]}
      grep -q "^$opt=" "$cfg" || continue
    else
      continue
    fi
    log "kernel: requested '$line' but .config has: $(grep -E "^(# )?$opt[= ]" "$cfg" || echo 'nothing (no such option, or unmet dependency)')"
    bad=1
  done < "$FRAGMENT"
  return $bad
}

configure() {
  [ -e "$KDIR/.config.ok" ] && return 0
  ensure_host_deps
  log "kernel: configuring Linux $KVERSION (tinyconfig + $(grep -c '^CONFIG_' "$FRAGMENT") options) in $OUT"
  mkdir -p "$OUT"
  kmake tinyconfig tinyconfig
  (cd "$SRC" && scripts/kconfig/merge_config.sh -m -O "$OUT" "$OUT/.config" "$FRAGMENT") >"$KDIR/logs/merge.log" 2>&1 \
    || { tail -n 20 "$KDIR/logs/merge.log" >&2; exit 1; }
  kmake olddefconfig olddefconfig
  check_config "$OUT/.config" || { log "kernel: the fragment did not take (above); fix rig/kernel/iommufd.config"; exit 1; }
  cp "$OUT/.config" "$KDIR/config"
  touch "$KDIR/.config.ok"
}

# --- kernel image -------------------------------------------------------------------------------------------
# kbuild's quiet output condensed: one progress line per 500 build steps (CC, LD, AR, ...), elapsed time.
progress() {
  local n=0 start=$SECONDS line
  while IFS= read -r line; do
    case $line in "  "[A-Z]*" "*) n=$((n + 1)) ;; *) continue ;; esac
    line=${line#  }
    [ $((n % 500)) -eq 0 ] && log "kernel: $n steps, $(hms $((SECONDS - start))) (${line//$OUT\//})"
  done
  log "kernel: $n steps in $(hms $((SECONDS - start)))"
}

build_kernel() {
  [ -e "$KDIR/.kernel.ok" ] && return 0
  ensure_host_deps
  log "kernel: make -j$(nproc) bzImage (nice 10; full log: $KDIR/logs/bzImage.log)"
  mkdir -p "$KDIR/logs"
  # pipefail (set above) makes the pipeline fail when make does.
  "${NICE[@]}" make -C "$SRC" O="$OUT" -j"$(nproc)" bzImage 2>&1 | tee "$KDIR/logs/bzImage.log" | progress || {
    log "kernel: bzImage build failed; tail of $KDIR/logs/bzImage.log:"
    grep -E 'error|Error' "$KDIR/logs/bzImage.log" | head -n 20 >&2 || true
    tail -n 20 "$KDIR/logs/bzImage.log" >&2
    exit 1
  }
  cp "$OUT/arch/x86/boot/bzImage" "$KDIR/bzImage.tmp" && mv "$KDIR/bzImage.tmp" "$KDIR/bzImage"
  sha256sum "$KDIR/bzImage" | cut -c1-16 > "$KDIR/.kernel.ok"
  log "kernel: bzImage $(du -h "$KDIR/bzImage" | cut -f1)"
}

build_headers() {
  [ -e "$KDIR/.headers.ok" ] && return 0
  ensure_host_deps
  log "kernel: make headers"
  kmake headers headers
  touch "$KDIR/.headers.ok"
}

# --- selftests ----------------------------------------------------------------------------------------------
ST="$SRC/tools/testing/selftests"
# real-peers.md §6 step 3; static so the busybox initramfs needs no libc or libcap.
CFLAGS=(-static -O2 -Wall -Wno-unused-function -D_GNU_SOURCE -include linux/memfd.h
        -I "$OUT/usr/include" -I "$SRC/tools/include" -I "$ST")

build_selftests() {
  local key
  key=$( { sha256sum "$ST"/iommu/*.[ch] "$ST"/kselftest*.h; gcc --version | head -n1; echo "${CFLAGS[*]}";
           cat "$KDIR/.kernel.ok"; } | sha256sum | cut -c1-16)
  [ -e "$KDIR/selftests/.key" ] && [ "$(cat "$KDIR/selftests/.key")" = "$key" ] && return 0
  ensure_host_deps
  rm -rf "$KDIR/selftests.tmp"; mkdir -p "$KDIR/selftests.tmp"
  local t
  for t in "${SELFTESTS[@]}"; do
    log "kernel: compiling selftest $t (static)"
    "${NICE[@]}" gcc "${CFLAGS[@]}" -o "$KDIR/selftests.tmp/$t" "$ST/iommu/$t.c" -lcap \
      2>"$KDIR/logs/selftest-$t.log" || { cat "$KDIR/logs/selftest-$t.log" >&2; exit 1; }
  done
  echo "$key" > "$KDIR/selftests.tmp/.key"
  rm -rf "$KDIR/selftests"; mv "$KDIR/selftests.tmp" "$KDIR/selftests"
}

# --- initramfs ----------------------------------------------------------------------------------------------
# busybox + /init (lib.sh's busybox_initramfs), and a second cpio member with /selftests: the kernel unpacks
# concatenated archives in order (Documentation/driver-api/early-userspace/buffer-format.rst).
build_initrd() {
  local key
  # Contents only: sha256sum's own output names each file, and the checkout's path must not key the cache
  # (every fresh clone, CI's too, would repack and so re-boot the selftests).
  key=$(for f in /bin/busybox "$here/init.sh" "$KDIR"/selftests/*; do sha256sum < "$f"; done | sha256sum | cut -c1-16)
  [ -s "$KDIR/initrd.gz" ] && [ -e "$KDIR/initrd.key" ] && [ "$(cat "$KDIR/initrd.key")" = "$key" ] && return 0
  ensure_host_deps
  log "kernel: packing initramfs"
  busybox_initramfs "$here/init.sh" "$KDIR/initrd-base.gz"
  local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiolab-selftests.XXXXXX")
  mkdir -p "$tmp/selftests"
  cp "$KDIR"/selftests/* "$tmp/selftests/"
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$KDIR/initrd-selftests.gz"
  rm -rf "$tmp"
  cat "$KDIR/initrd-base.gz" "$KDIR/initrd-selftests.gz" > "$KDIR/initrd.gz.tmp"
  rm -f "$KDIR/initrd-base.gz" "$KDIR/initrd-selftests.gz"
  mv "$KDIR/initrd.gz.tmp" "$KDIR/initrd.gz"
  echo "$key" > "$KDIR/initrd.key"
}

configure
build_kernel
build_headers
build_selftests
build_initrd
for t in "${SELFTESTS[@]}"; do
  bash "$here/run-selftest.sh" "$t" >/dev/null
done
log "kernel: complete (Linux $KVERSION, key $KEY, $(hms $((SECONDS - t0)))): $KDIR"
