# Shared helpers for rig/ scripts (sourced).  Caches live outside the repo under $VFIOLAB_CACHE.
: "${VFIOLAB_CACHE:=$HOME/.cache/vfiolab}"
export VFIOLAB_CACHE
mkdir -p "$VFIOLAB_CACHE"

log() { printf 'rig: %s\n' "$*" >&2; }

# The Debian mirror configured on this machine (never hard-coded: read from apt's sources).
debian_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -oE 'https?://[^[:space:]]+' | grep -v -- '-security' | grep -i debian | head -n1)
  [ -n "$m" ] || { log "no Debian mirror found in apt sources"; return 1; }
  printf '%s\n' "${m%/}"
}

# Run apt-get against a private one-suite list (e.g. sid) without touching the system's sources.
# usage: private_apt SUITE apt-get-args...
private_apt() { _private_apt_run apt-get "$@"; }

# The same for apt-cache (e.g. `private_apt_cache sid pkgnames linux-binary-7.2`).
private_apt_cache() { _private_apt_run apt-cache "$@"; }

_private_apt_run() {
  local tool=$1 suite=$2; shift 2
  local dir="$VFIOLAB_CACHE/apt-$suite"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  if [ ! -s "$dir/sources.list" ]; then
    printf 'deb %s %s main\n' "$(debian_mirror)" "$suite" > "$dir/sources.list"
  fi
  local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives"
              -o "APT::Get::List-Cleanup=0")
  if [ ! -e "$dir/lists/.updated" ]; then
    apt-get "${opts[@]}" update -q >&2 && touch "$dir/lists/.updated"
  fi
  "$tool" "${opts[@]}" "$@"
}

# Pack a busybox-static initramfs (applet links in /bin, empty /proc /sys /dev /tmp) with INIT as /init,
# written atomically to OUT as a gzip'd newc cpio.  usage: busybox_initramfs INIT OUT
busybox_initramfs() {
  local init=$1 out=$2 bb=/bin/busybox
  if command -v file >/dev/null && ! file -L "$bb" | grep -q 'statically linked'; then
    log "$bb is not statically linked (install busybox-static: make apt)"; return 1
  fi
  local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiolab-initramfs.XXXXXX")
  mkdir -p "$tmp/bin" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/tmp" "$(dirname "$out")"
  cp "$bb" "$tmp/bin/busybox"
  for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"; done
  install -m 0755 "$init" "$tmp/init"
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
}
