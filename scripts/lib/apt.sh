# shellcheck shell=bash
# Sourced by scripts/setup.sh, build-armv7.sh and smoke-armv7.sh: installs Debian packages that are
# not installed yet. A mirror caught mid-sync ("File has unexpected size") leaves one index stale
# and the install fails on mismatched versions; such failures pass after a while, so the index is
# refreshed and the install tried again, three times at most.

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# apt_install [apt-get options...] -- packages...
apt_install() {
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    local missing=()
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "apt: installing ${missing[*]}"
    local attempt
    for attempt in 1 2 3; do
        # One failing index must not stop the install of packages from the others.
        $SUDO apt-get -o Acquire::Retries=3 update -qq || true
        if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null; then
            return 0
        fi
        [ "$attempt" -lt 3 ] || break
        echo "apt: install failed (attempt $attempt); refreshing the index in $((attempt * 20)) s"
        sleep $((attempt * 20))
    done
    echo "apt: could not install ${missing[*]}" >&2
    return 1
}
