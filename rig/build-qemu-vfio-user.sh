#!/usr/bin/env bash
# QEMU 11.1's vfio-user client with a Linux guest, for tests/interop/test_qemu_vfio_user.py (`make rigs`).
# rig/qemu-vfio-user.sh builds the trixie chroot with QEMU, the guest kernel and the busybox initramfs packer;
# this adds what the guest checks need from that kernel's modules: uio.ko and uio_pci_generic.ko (decompressed,
# so busybox's insmod can load them), to observe INTx interrupts from the guest.  Cached under
# $VFIOLAB_CACHE/qemu-vfio-user/modules/<kernel release>/; a complete cache returns at once.
#
# usage: build-qemu-vfio-user.sh          build (idempotent), print the QEMU version and the module directory
#        build-qemu-vfio-user.sh env      CHROOT=, KERNEL=, QEMU_VERSION=, MODULES= for a test
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
base="$VFIOLAB_CACHE/qemu-vfio-user"
rig="$here/qemu-vfio-user.sh"
want=(kernel/drivers/uio/uio.ko kernel/drivers/uio/uio_pci_generic.ko)

modules_dir() {
  # The kernel release from the package the base rig chose (linux-image-<release>), e.g. 6.12.107+deb13-cloud-amd64
  local pkg; pkg=$(awk '{print $1}' "$base/kernel/package.txt")
  printf '%s/modules/%s\n' "$base" "${pkg#linux-image-}"
}

ensure_modules() {
  local dir; dir=$(modules_dir)
  local ok=1 m
  for m in "${want[@]}"; do [ -s "$dir/$(basename "$m")" ] || ok=0; done
  [ $ok -eq 1 ] && return 0
  local pkg; pkg=$(awk '{print $1}' "$base/kernel/package.txt")
  log "qemu-vfio-user: extracting ${want[*]##*/} from $pkg"
  local tmp="$base/chroot/tmp/vfiolab-modules"
  rm -rf "$tmp"; mkdir -p "$tmp"
  bash "$rig" run sh -c "cd /tmp/vfiolab-modules && apt-get download -q $pkg" >&2
  dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
  local root; root=$(ls -d "$tmp/x/usr/lib/modules/${pkg#linux-image-}" "$tmp/x/lib/modules/${pkg#linux-image-}" \
    2>/dev/null | head -n1 || true)
  [ -n "$root" ] || { log "qemu-vfio-user: $pkg has no lib/modules/${pkg#linux-image-}"; return 1; }
  mkdir -p "$dir.tmp"
  for m in "${want[@]}"; do
    if [ -e "$root/$m.xz" ]; then xz -dc "$root/$m.xz" > "$dir.tmp/$(basename "$m")"
    elif [ -e "$root/$m" ]; then cp "$root/$m" "$dir.tmp/"
    else log "qemu-vfio-user: $pkg lacks $m (CONFIG_UIO_PCI_GENERIC=m expected)"; rm -rf "$dir.tmp" "$tmp"; return 1
    fi
  done
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  rm -rf "$tmp"
}

case "${1:-build}" in
  build)
    bash "$rig" build
    exec 9>"$base/.modules.lock"; flock 9
    ensure_modules
    log "qemu-vfio-user: guest modules in $(modules_dir)"
    ;;
  env)
    bash "$rig" env
    printf 'MODULES=%s\n' "$(modules_dir)"
    ;;
  *) log "usage: $0 [build|env]"; exit 2 ;;
esac
