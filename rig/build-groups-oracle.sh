#!/usr/bin/env bash
# Linux as the oracle for IOMMU groups: boot a Debian 7.2 kernel under QEMU q35 + intel-iommu (TCG) once per
# topology in rig/groups_oracle/topologies/, and cache what Linux saw (config bytes, groups, resources).
# Cache: $VFIOLAB_CACHE/groups-oracle/<kernel-version>/<topology>/.  Only missing or stale captures are
# rebuilt; with a complete cache this returns at once without network access.  docs/rigs.md has the details.
# Environment: VFIOLAB_GROUPS_SUITE=bookworm boots the host's Debian 12 cloud kernel (bookworm plus
# bookworm-security from the host's own apt lists, e.g. 6.12.117+deb12) instead of sid's 7.2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/lib.sh"
src="$here/groups_oracle"
base="$VFIOLAB_CACHE/groups-oracle"
mkdir -p "$base"

if [ -x "$repo/.venv/bin/python" ]; then PY=("$repo/.venv/bin/python"); else PY=(env "PYTHONPATH=$repo/src" python3); fi
APPEND="console=ttyS0 intel_iommu=on panic=-1 loglevel=4 no_timer_check"
QEMU_BASE=(qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot -nodefaults)
TIMEOUT=${VFIOLAB_GROUPS_TIMEOUT:-240}

# One builder at a time (several checkouts may run `make rigs` against the same cache).
exec 9>"$base/.lock"
flock 9

# Content hash only: file paths differ between checkouts (CI clones afresh) and must not key the cache.
sha() { local f; for f in "$@"; do sha256sum < "$f"; done | sha256sum | cut -c1-16; }

# --- guest kernel -------------------------------------------------------------------------------------------
# Packages come from sid through a private list (private_apt); "bookworm" means the host's own apt sources.
suite_apt_cache() { local s=$1; shift; if [ "$s" = bookworm ]; then apt-cache "$@"; else private_apt_cache "$s" "$@"; fi; }
suite_apt_get() { local s=$1; shift; if [ "$s" = bookworm ]; then apt-get "$@"; else private_apt "$s" "$@"; fi; }

# Newest package name from SUITE matching a regular expression.
newest_pkg() { suite_apt_cache "$1" pkgnames "$2" | grep -E "$3" | sort -V | tail -n1; }

# Download packages from SUITE into a scratch dir, extract vmlinuz + config into $1/kernel.
extract_kernel() {
  local dest=$1 suite=$2; shift 2
  local tmp; tmp=$(mktemp -d "$base/.dl.XXXXXX")
  (cd "$tmp" && suite_apt_get "$suite" download "$@" >&2)
  for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
  local vmlinuz config
  vmlinuz=$(find "$tmp/x" -name 'vmlinuz*' -type f | head -n1)
  config=$(find "$tmp/x" \( -name 'config-*' -o -name config \) -type f | head -n1)
  [ -n "$vmlinuz" ] && [ -n "$config" ] || { log "groups-oracle: no vmlinuz/config in $*"; rm -rf "$tmp"; return 1; }
  for opt in CONFIG_INTEL_IOMMU CONFIG_PCI_IOV CONFIG_BLK_DEV_NVME CONFIG_DEVTMPFS CONFIG_SERIAL_8250_CONSOLE; do
    grep -q "^$opt=y" "$config" || { log "groups-oracle: $* lacks $opt=y"; rm -rf "$tmp"; return 1; }
  done
  mkdir -p "$dest/kernel"
  cp "$vmlinuz" "$dest/kernel/vmlinuz"
  cp "$config" "$dest/kernel/config"
  printf '%s\n' "$suite: $*" > "$dest/kernel/packages.txt"
  rm -rf "$tmp"
  touch "$dest/kernel/.ok"
}

# Sets KVER and KDIR, downloading the kernel unless the cache already pins one.
ensure_kernel() {
  local want=${VFIOLAB_GROUPS_SUITE:-sid} cur=""
  [ -s "$base/kernel-version" ] && cur=$(cat "$base/kernel-version")
  # The pinned kernel stays until VFIOLAB_GROUPS_SUITE asks for another suite (or kernel-version is deleted).
  if [ -n "$cur" ] && [ -e "$base/$cur/kernel/.ok" ] &&
     { [ -z "${VFIOLAB_GROUPS_SUITE:-}" ] || grep -q "^$want:" "$base/$cur/kernel/packages.txt"; }; then
    KVER=$cur; KDIR=$base/$cur/kernel; return 0
  fi
  local pkg="" ver=""
  if [ "$want" = sid ]; then
    # Debian sid splits the kernel: linux-binary-* holds vmlinuz, linux-base-* the config.  Prefer cloud.
    for flavour in cloud-amd64 amd64; do
      pkg=$(newest_pkg sid linux-binary-7.2 "^linux-binary-7\.2\.[0-9]+\+[a-z0-9]+-$flavour\$") || true
      [ -n "$pkg" ] || continue
      ver=${pkg#linux-binary-}
      log "groups-oracle: fetching sid kernel $ver"
      extract_kernel "$base/$ver" sid "$pkg" "linux-base-$ver" && break
      pkg=""
    done
    if [ -z "$pkg" ]; then
      log "groups-oracle: no usable Linux 7.2 kernel in sid; falling back to bookworm's cloud kernel"
      want=bookworm
    fi
  fi
  if [ "$want" = bookworm ]; then
    pkg=$(newest_pkg bookworm linux-image- '^linux-image-[0-9.]+-?[0-9a-z+.]*-cloud-amd64-unsigned$') || true
    [ -n "$pkg" ] || { log "groups-oracle: no cloud kernel in the host's apt lists either (apt-get update?)"; return 1; }
    ver=${pkg#linux-image-}; ver=${ver%-unsigned}
    log "groups-oracle: fetching bookworm kernel $ver"
    extract_kernel "$base/$ver" bookworm "$pkg" || return 1
  fi
  printf '%s\n' "$ver" > "$base/kernel-version"
  KVER=$ver; KDIR=$base/$ver/kernel
}

# --- initramfs ----------------------------------------------------------------------------------------------
# Sets INITRD: busybox-static + /init, rebuilt when either changes.
ensure_initrd() {
  INITRD="$base/initrd/$(sha /bin/busybox "$src/init.sh").gz"
  [ -s "$INITRD" ] && return 0
  log "groups-oracle: packing initramfs"
  busybox_initramfs "$src/init.sh" "$INITRD"
}

# --- one topology -------------------------------------------------------------------------------------------
# The QEMU arguments of a topology file, one per line (comments and blank lines dropped).
topology_args() { grep -vE '^[[:space:]]*(#|$)' "$1" | tr -s ' \t' '\n' | grep -v '^$'; }

# boot TOPOLOGY-FILE OUTDIR: one QEMU run; the capture lands in OUTDIR/capture.txt.
boot() {
  local topo=$1 out=$2
  local args; mapfile -t args < <(topology_args "$topo")
  local cmd=("${QEMU_BASE[@]}" -serial "file:$out/console.log" -serial "file:$out/capture.txt"
             -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$APPEND" -device intel-iommu,intremap=on "${args[@]}")
  printf '%q ' "${cmd[@]}" > "$out/qemu-cmd.txt"; echo >> "$out/qemu-cmd.txt"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  timeout "$TIMEOUT" "${cmd[@]}" </dev/null >"$out/qemu.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' > "$out/boot-seconds.txt"
  [ $rc -eq 0 ] || { log "groups-oracle: qemu exited with $rc$( [ $rc -eq 124 ] && echo ' (timeout)')"; return 1; }
  grep -q '^@@vfiolab-end' "$out/capture.txt" || { log "groups-oracle: guest did not finish (panic?)"; return 1; }
}

# capture TOPOLOGY-FILE PROGRESS: make $base/$KVER/<name> complete, booting only if the inputs changed.
capture() {
  local topo=$1 progress=$2 name out
  name=$(basename "$topo" .qemu)
  out="$base/$KVER/$name"
  local bkey pkey
  # What the boot depends on: kernel, QEMU, command line, initramfs inputs (its name is their hash; a repack
  # differs only in cpio timestamps) and the topology's arguments (not its comments).
  bkey=$(printf '%s\n' "$KVER" "$(qemu-system-x86_64 --version | head -n1)" "${QEMU_BASE[*]}" "$APPEND" \
         "$(basename "$INITRD")" "$(topology_args "$topo")")
  bkey=$(printf '%s' "$bkey" | sha256sum | cut -c1-16)
  pkey=$(sha "$src/parse_capture.py" "$repo/src/vfiolab/pci/dump.py")
  if [ -e "$out/.boot-key" ] && [ "$(cat "$out/.boot-key")" = "$bkey" ]; then
    [ -e "$out/.parse-key" ] && [ "$(cat "$out/.parse-key")" = "$pkey" ] && return 0
    log "groups-oracle: $progress $name: re-parsing the cached capture"
    "${PY[@]}" "$src/parse_capture.py" "$out/capture.txt" "$out" || return 1
    echo "$pkey" > "$out/.parse-key"
    return 0
  fi
  local tmp="$out.tmp" failed="$out.failed-console.log" try
  rm -f "$failed"
  for try in 1 2; do
    rm -rf "$tmp"; mkdir -p "$tmp"
    log "groups-oracle: $progress $name: booting Linux $KVER (try $try)"
    if boot "$topo" "$tmp" && "${PY[@]}" "$src/parse_capture.py" "$tmp/capture.txt" "$tmp"; then
      cp "$topo" "$tmp/topology.qemu"
      [ -e "$failed" ] && mv "$failed" "$tmp/failed-try-console.log"   # kept: what the retry papered over
      echo "$bkey" > "$tmp/.boot-key"; echo "$pkey" > "$tmp/.parse-key"
      rm -rf "$out"; mv "$tmp" "$out"
      log "groups-oracle: $progress $name: $(grep -c '^[0-9a-f]*:*[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]\.[0-7] ' "$out/config.dump") functions, $(grep -c '"id"' "$out/groups.json") groups; boot $(cat "$out/boot-seconds.txt") s"
      return 0
    fi
    log "groups-oracle: $progress $name: console: $(grep -m1 -aE 'Kernel panic|BUG:|Oops|Call Trace' "$tmp/console.log" || echo 'no panic message')"
    cp "$tmp/console.log" "$failed" 2>/dev/null || true
  done
  log "groups-oracle: $progress $name: FAILED twice; console tail ($tmp/console.log):"
  tail -n 40 "$tmp/console.log" >&2 || true
  tail -n 5 "$tmp/qemu.log" >&2 || true
  return 1
}

ensure_kernel
ensure_initrd
topos=("$src"/topologies/*.qemu)
n=0 failed=0
for t in "${topos[@]}"; do
  n=$((n + 1))
  capture "$t" "[$n/${#topos[@]}]" || failed=$((failed + 1))
done
[ $failed -eq 0 ] || { log "groups-oracle: $failed topologies failed"; exit 1; }
log "groups-oracle: complete ($KVER): $base/$KVER"
