#!/usr/bin/env bash
# Install the Debian packages the tests and demo need, if any is missing.
# A fresh machine's apt lists are empty or stale, so `apt-get update` runs before the first install.
set -euo pipefail
want=(pciutils pci.ids qemu-system-x86 busybox-static cpio)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "rig/apt-deps: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
