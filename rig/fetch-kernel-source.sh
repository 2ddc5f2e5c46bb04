#!/usr/bin/env bash
# Fetch Debian sid's linux-source-7.2 and unpack it to $VFIOLAB_CACHE/src/linux-source-7.2.
# The kernel source is the specification the model follows and the tree rig/kernel builds from.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
dest="$VFIOLAB_CACHE/src/linux-source-7.2"
[ -e "$dest/.unpacked" ] && { echo "$dest"; exit 0; }
mkdir -p "$VFIOLAB_CACHE/src" && cd "$VFIOLAB_CACHE/src"
log "downloading linux-source-7.2 from sid"
private_apt sid download linux-source-7.2 >&2
deb=$(ls -t linux-source-7.2_*.deb | head -n1)
rm -rf pkg && mkdir pkg && dpkg-deb -x "$deb" pkg
rm -rf "$dest" && mkdir -p "$dest"
log "unpacking $(basename "$(ls pkg/usr/src/linux-source-7.2.tar.*)")"
tar -xf pkg/usr/src/linux-source-7.2.tar.* -C "$dest" --strip-components=1
rm -rf pkg
touch "$dest/.unpacked"
echo "$dest"
