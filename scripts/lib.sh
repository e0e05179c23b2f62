# Shared shell helpers for the scripts in this directory. Sourced, not run.
# shellcheck shell=bash

# Everything downloaded or built from upstream lives here, outside git.
MIGLAB_CACHE=${MIGLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglab}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages)"
}

# The machine's own Debian sources, turned into a deb-src entry at run time,
# so that no archive host name is written into this repository.
SRC_LIST=/etc/apt/sources.list.d/miglab-deb-src.sources
ensure_deb_src() {
    [ -s "$SRC_LIST" ] && return 0
    local deb822=/etc/apt/sources.list.d/debian.sources
    if [ -f "$deb822" ]; then
        sed -e 's/^Types:.*deb\b.*/Types: deb-src/' "$deb822" >"$SRC_LIST.tmp"
    elif [ -f /etc/apt/sources.list ]; then
        # one-line format: "deb URI SUITE COMPONENTS" -> deb822 deb-src stanzas
        awk '$1 == "deb" { sub(/^\[[^]]*\] */, "", $2);
                 printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $2, $3;
                 for (i = 4; i <= NF; i++) printf " %s", $i; printf "\n\n" }' \
            /etc/apt/sources.list >"$SRC_LIST.tmp"
    fi
    grep -q '^Types: deb-src' "$SRC_LIST.tmp" 2>/dev/null ||
        { rm -f "$SRC_LIST.tmp"; die "found no Debian 'deb' entry in the apt sources to derive deb-src from"; }
    mv "$SRC_LIST.tmp" "$SRC_LIST"
    log "added $SRC_LIST (deb-src derived from the machine's apt sources)"
    APT_UPDATED=
}

# The machine's Debian suite stanza, copied with another suite (backports).
ensure_apt_suite() { # suite
    local suite=$1 list=/etc/apt/sources.list.d/miglab-$1.sources
    [ -s "$list" ] && return 0
    local deb822=/etc/apt/sources.list.d/debian.sources
    [ -f "$deb822" ] || die "no $deb822 to derive the $suite entry from"
    awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
        /\nSuites: bookworm( |\n|$)/ {
            sub(/\nSuites: [^\n]*/, "\nSuites: " suite); print; print ""; exit }' \
        "$deb822" >"$list.tmp"
    grep -q "^Suites: $suite" "$list.tmp" ||
        { rm -f "$list.tmp"; die "found no bookworm entry in $deb822 to derive $suite from"; }
    mv "$list.tmp" "$list"
    log "added $list (derived from the machine's apt sources)"
    APT_UPDATED=
}

APT_UPDATED=
apt_update_once() {
    [ -n "$APT_UPDATED" ] && return 0
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
}

# Install the Debian packages named that are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update_once
    log "installing ${missing[*]}"
    local aptlog
    aptlog=$(mktemp)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >"$aptlog" 2>&1 ||
        { tail -20 "$aptlog" >&2; rm -f "$aptlog"; die "apt-get install ${missing[*]} failed"; }
    rm -f "$aptlog"
}
