# Shared by rig/kernel/build.sh and rig/kernel/run-selftest.sh (sourced): where the iommufd-selftest kernel
# lives in the cache and how its key is formed.  tests/interop/kernel/kselftest_cache.py computes the same key.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$repo/rig/lib.sh"

SRC="$VFIOLAB_CACHE/src/linux-source-7.2"
FRAGMENT="$here/iommufd.config"
SELFTESTS=(iommufd iommufd_fail_nth)

if [ -x "$repo/.venv/bin/python" ]; then PY=("$repo/.venv/bin/python"); else PY=(env "PYTHONPATH=$repo/src" python3); fi

# The kernel release of the unpacked source tree, from its top Makefile (e.g. 7.2.13).
source_version() {
  awk -F' *= *' '/^VERSION =/{v=$2} /^PATCHLEVEL =/{p=$2} /^SUBLEVEL =/{s=$2} /^EXTRAVERSION =/{e=$2; exit}
                 END { if (v == "") exit 1; printf "%s.%s.%s%s\n", v, p, s, e }' "$SRC/Makefile"
}

# Cache key: source version + config fragment ("linux-source <version>\n" followed by the fragment bytes).
kernel_key() {
  { printf 'linux-source %s\n' "$(source_version)"; cat "$FRAGMENT"; } | sha256sum | cut -c1-16
}

# Sets KVERSION, KEY and KDIR ($VFIOLAB_CACHE/kernel/<key>).
kernel_paths() {
  [ -e "$SRC/.unpacked" ] || { log "kernel: no kernel source at $SRC (rig/fetch-kernel-source.sh)"; return 1; }
  KVERSION=$(source_version)
  KEY=$(kernel_key)
  KDIR="$VFIOLAB_CACHE/kernel/$KEY"
}

# Seconds as "4m07s".
hms() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
