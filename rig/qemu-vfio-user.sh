#!/usr/bin/env bash
# QEMU 11.1's vfio-user client (`vfio-user-pci`) as a real peer: a Debian trixie chroot with qemu-system-x86 from
# trixie-backports (the bookworm host's glibc is too old for it), a trixie cloud guest kernel and a busybox
# initramfs builder.  Everything lives under $VFIOLAB_CACHE/qemu-vfio-user/, outside the repository; a complete
# cache returns at once.  Not named build-*.sh yet: `make rigs` picks it up once an interop test needs it.
#
# usage: qemu-vfio-user.sh                      build (idempotent), smoke-boot the guest, print the QEMU version
#        qemu-vfio-user.sh env                  print CHROOT=, KERNEL=, QEMU_VERSION= for a test to source
#        qemu-vfio-user.sh initramfs INIT OUT   pack busybox-static + INIT (as /init) into OUT (gzip newc cpio)
#        qemu-vfio-user.sh run CMD...           run CMD inside the chroot with /proc, /sys, /dev bound
# Environment: VFIOLAB_QEMU_SUITE (default trixie-backports) picks the suite QEMU comes from.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
base="$VFIOLAB_CACHE/qemu-vfio-user"
root="$base/chroot"
suite=trixie
qemu_suite=${VFIOLAB_QEMU_SUITE:-trixie-backports}
mkdir -p "$base"

# --- chroot helpers -----------------------------------------------------------------------------------------
# Run a command inside the chroot.  /proc, /sys and /dev are bound only for the command's lifetime, in a private
# mount namespace (so nothing leaks into the host's mount table even if the command dies), and unmounted after.
run_in_chroot() {
  unshare --mount --propagation private -- /bin/sh -ec '
    root=$1; shift
    for d in proc sys dev; do mount --bind "/$d" "$root/$d"; done
    rc=0; chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
    for d in dev sys proc; do umount "$root/$d"; done
    exit $rc' run_in_chroot "$root" "$@"
}

# debootstrap: the installed one, else bookworm's package unpacked with dpkg -x (it is a shell script + data).
debootstrap_cmd() {
  if command -v debootstrap >/dev/null; then DEBOOTSTRAP=(debootstrap); return 0; fi
  local dir="$base/tools/debootstrap"
  if [ ! -x "$dir/usr/sbin/debootstrap" ]; then
    log "qemu-vfio-user: fetching debootstrap (not installed on the host)"
    local tmp; tmp=$(mktemp -d "$base/.dl.XXXXXX")
    (cd "$tmp" && private_apt bookworm download debootstrap >&2)
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$tmp"/debootstrap_*.deb "$dir"
    rm -rf "$tmp"
  fi
  DEBOOTSTRAP=(env "DEBOOTSTRAP_DIR=$dir/usr/share/debootstrap" "$dir/usr/sbin/debootstrap")
}

# A trixie root file system with qemu-system-x86 from $qemu_suite.
ensure_chroot() {
  local mirror; mirror=$(debian_mirror)
  if [ ! -e "$root/.vfiolab-debootstrap-ok" ]; then
    debootstrap_cmd
    log "qemu-vfio-user: debootstrap $suite into $root (mirror $mirror)"
    rm -rf "$root"
    "${DEBOOTSTRAP[@]}" --variant=minbase "$suite" "$root" "$mirror" >"$base/debootstrap.log" 2>&1 ||
      { tail -n 20 "$base/debootstrap.log" >&2; log "qemu-vfio-user: debootstrap failed"; return 1; }
    touch "$root/.vfiolab-debootstrap-ok"
  fi
  if [ ! -e "$root/.vfiolab-qemu-ok" ]; then
    printf 'deb %s %s main\n' "$mirror" "$suite" "$mirror" "$suite-updates" "$mirror" "$qemu_suite" \
      | awk 'NF' | sort -u > "$root/etc/apt/sources.list"
    log "qemu-vfio-user: apt-get update + install qemu-system-x86 from $qemu_suite in the chroot"
    run_in_chroot apt-get update -q >"$base/apt.log" 2>&1 ||
      { tail -n 20 "$base/apt.log" >&2; return 1; }
    run_in_chroot apt-get install -y -q --no-install-recommends -t "$qemu_suite" qemu-system-x86 \
      >>"$base/apt.log" 2>&1 || { tail -n 20 "$base/apt.log" >&2; return 1; }
    run_in_chroot apt-get clean
    touch "$root/.vfiolab-qemu-ok"
  fi
}

# --- guest kernel -------------------------------------------------------------------------------------------
# trixie's cloud kernel: the metapackage names the versioned image; download it in the chroot, extract vmlinuz.
ensure_kernel() {
  KERNEL="$base/kernel/vmlinuz"
  [ -s "$KERNEL" ] && return 0
  local pkg
  pkg=$(run_in_chroot apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { log "qemu-vfio-user: no cloud kernel behind linux-image-cloud-amd64 in $suite"; return 1; }
  log "qemu-vfio-user: fetching guest kernel $pkg"
  rm -rf "$root/tmp/kernel"; mkdir -p "$root/tmp/kernel"
  run_in_chroot sh -c "cd /tmp/kernel && apt-get download -q $pkg" >&2
  dpkg-deb -x "$root"/tmp/kernel/"$pkg"_*.deb "$root/tmp/kernel/x"
  local vmlinuz; vmlinuz=$(find "$root/tmp/kernel/x/boot" -name 'vmlinuz-*' -type f | head -n1)
  [ -n "$vmlinuz" ] || { log "qemu-vfio-user: $pkg has no vmlinuz"; return 1; }
  mkdir -p "$base/kernel"
  cp "$vmlinuz" "$KERNEL.tmp" && mv "$KERNEL.tmp" "$KERNEL"
  printf '%s %s\n' "$pkg" "$(basename "$vmlinuz")" > "$base/kernel/package.txt"
  rm -rf "$root/tmp/kernel"
}

# --- initramfs builder --------------------------------------------------------------------------------------
# build_initramfs INIT OUT: busybox-static with its applet links and INIT as /init (rig/lib.sh does the packing).
build_initramfs() { busybox_initramfs "$1" "$2"; }

# --- smoke boot ---------------------------------------------------------------------------------------------
# Boot the guest once (no vfio-user device) inside the chroot to prove kernel + initramfs + QEMU work together.
smoke_boot() {
  local dir="$root/vfiolab-smoke" key
  key=$(printf '%s\n' "$QEMU_VERSION" "$(cat "$base/kernel/package.txt")" "$(sha256sum /bin/busybox)" | sha256sum | cut -c1-16)
  [ -e "$base/smoke-$key.ok" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
echo "vfiolab-guest-ok $(uname -r) $(ls /sys/bus/pci/devices | wc -l) pci functions"
poweroff -f
EOF
  build_initramfs "$dir/init" "$dir/initrd.gz"
  cp "$KERNEL" "$dir/vmlinuz"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  run_in_chroot timeout 180 qemu-system-x86_64 -machine pc,accel=tcg -m 256 -smp 1 -nographic -no-reboot \
    -nodefaults -serial stdio -kernel /vfiolab-smoke/vmlinuz -initrd /vfiolab-smoke/initrd.gz \
    -append "console=ttyS0 panic=-1 loglevel=4" </dev/null >"$dir/console.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  if [ $rc -ne 0 ] || ! grep -aq 'vfiolab-guest-ok' "$dir/console.log"; then
    tail -n 20 "$dir/console.log" >&2; log "qemu-vfio-user: smoke boot failed (rc $rc)"; return 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' > "$base/smoke-boot-seconds.txt"
  grep -ao 'vfiolab-guest-ok.*' "$dir/console.log" | tr -d '\r' > "$base/smoke-$key.ok"
  rm -rf "$dir"
}

# --- main ---------------------------------------------------------------------------------------------------
build() {
  exec 9>"$base/.lock"
  flock 9
  ensure_chroot
  ensure_kernel
  QEMU_VERSION=$(run_in_chroot qemu-system-x86_64 --version)
  QEMU_VERSION=${QEMU_VERSION%%$'\n'*}
  printf '%s\n' "$QEMU_VERSION" > "$base/qemu-version.txt"
  smoke_boot
  log "qemu-vfio-user: $(cat "$base/smoke-"*.ok | head -n1), smoke boot $(cat "$base/smoke-boot-seconds.txt") s"
  # The check this rig exists for: the chroot's QEMU has the vfio-user client device.
  local devices; devices=$(run_in_chroot qemu-system-x86_64 -device help)
  grep vfio-user-pci <<<"$devices" >&2 || { log "qemu-vfio-user: this QEMU has no vfio-user-pci device"; return 1; }
  printf '%s\n' "$QEMU_VERSION"
}

case "${1:-build}" in
  build) build ;;
  env)
    [ -e "$root/.vfiolab-qemu-ok" ] && [ -s "$base/kernel/vmlinuz" ] || { log "qemu-vfio-user: not built; run $0"; exit 1; }
    printf 'CHROOT=%s\nKERNEL=%s\nQEMU_VERSION=%q\n' "$root" "$base/kernel/vmlinuz" "$(cat "$base/qemu-version.txt")" ;;
  initramfs) [ $# -eq 3 ] || { log "usage: $0 initramfs INIT OUT"; exit 2; }; build_initramfs "$2" "$3" ;;
  run) shift; [ -e "$root/.vfiolab-qemu-ok" ] || { log "qemu-vfio-user: not built; run $0"; exit 1; }; run_in_chroot "$@" ;;
  *) log "usage: $0 [build|env|initramfs INIT OUT|run CMD...]"; exit 2 ;;
esac
