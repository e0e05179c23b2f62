# Shared shell helpers for the scripts in this directory. Sourced, not run.
# shellcheck shell=bash

# Everything downloaded or built from upstream lives here, outside git.
MIGLAB_CACHE=${MIGLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miglab}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The QEMU builds compile through ccache (scripts/build-qemu), and so do the
# later ninja runs in their trees (scripts/qemu-selftest): one cache for all.
# In depend mode a miss does not run the preprocessor before the compiler
# (which made a cold 7.2 build take 4 min 14 s instead of 2 min 49 s here).
export CCACHE_DIR=${CCACHE_DIR:-$MIGLAB_CACHE/ccache}
export CCACHE_DEPEND=${CCACHE_DEPEND:-true}
# Paths under the cache are hashed relative to the build directory, so the
# stock and patched trees of a version share their objects (scripts/build-qemu).
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$MIGLAB_CACHE}

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

# The machine's bookworm stanza of its Debian sources, printed with another
# suite and, if given, other types ("deb-src"): the one rule by which every
# apt entry of ours is derived, so that no archive host name is written here.
derive_apt_stanza() { # suite [types]
    local suite=$1 types=${2:-} deb822=/etc/apt/sources.list.d/debian.sources
    [ -f "$deb822" ] || die "no $deb822 to derive the $suite entry from"
    awk -v suite="$suite" -v types="$types" 'BEGIN { RS = ""; FS = "\n" }
        /\nSuites: bookworm( |\n|$)/ {
            sub(/\nSuites: [^\n]*/, "\nSuites: " suite)
            if (types != "") sub(/^Types: [^\n]*/, "Types: " types)
            print; print ""; exit }' "$deb822"
}

# The machine's Debian suite stanza, copied with another suite (backports).
ensure_apt_suite() { # suite
    local suite=$1 list=/etc/apt/sources.list.d/miglab-$1.sources
    [ -s "$list" ] && return 0
    derive_apt_stanza "$suite" >"$list.tmp"
    grep -q "^Suites: $suite" "$list.tmp" ||
        { rm -f "$list.tmp"; die "found no bookworm entry to derive $suite from"; }
    mv "$list.tmp" "$list"
    log "added $list (derived from the machine's apt sources)"
    APT_UPDATED=
}

# Another suite of the machine's Debian archive (unstable) through a private
# apt view in the cache: its own entry (derived as above, deb and deb-src)
# and package lists, used only by the apt-get / apt-cache commands run
# through apt_view, to fetch source packages and to download (never install)
# packages. The host's apt sources and state are left as they are, so
# neither its `apt-get update`, `apt-get source` nor `apt-get install` ever
# sees that suite.
# Copies ninja's output (stdin) to LOG and, every 15 s, says how far the
# build has come: "FLAVOUR: N/M steps (P%), T s". A cold build of a QEMU
# takes minutes; without it the only sign of life would be the fan.
build_progress() { # flavour, log file
    local flavour=$1 out=$2 line start=$SECONDS last=$SECONDS
    : >"$out"
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$out"
        if [[ $line =~ ^\[([0-9]+)/([0-9]+)\] ]] && ((SECONDS - last >= 15)); then
            last=$SECONDS
            log "$flavour: ${BASH_REMATCH[1]}/${BASH_REMATCH[2]} steps" \
                "($((BASH_REMATCH[1] * 100 / BASH_REMATCH[2]))%), $((SECONDS - start)) s"
        fi
    done
}

apt_view_opts() { # suite
    local dir=$MIGLAB_CACHE/apt-$1
    # (the lists live under root's home, where apt's _apt user cannot write)
    printf '%s\n' -o "Dir::Etc::SourceList=$dir/sources.list" \
        -o "Dir::Etc::SourceParts=$dir/sources.list.d" -o "Dir::State::Lists=$dir/lists" \
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root"
}

apt_view_update() { # suite
    local suite=$1 dir=$MIGLAB_CACHE/apt-$1
    mkdir -p "$dir/sources.list.d" "$dir/lists/partial"
    : >"$dir/sources.list"
    derive_apt_stanza "$suite" "deb deb-src" >"$dir/$suite.sources.tmp"
    grep -q '^Types: deb deb-src' "$dir/$suite.sources.tmp" ||
        die "found no bookworm entry to derive an entry for $suite from"
    mv "$dir/$suite.sources.tmp" "$dir/sources.list.d/$suite.sources"
    log "apt-get update of $suite (private lists in $dir)"
    local opts
    mapfile -t opts < <(apt_view_opts "$suite")
    apt-get "${opts[@]}" update -qq >&2 || die "apt-get update of $suite failed"
}

apt_view() { # suite, apt-get|apt-cache, arguments...
    local opts cmd=$2
    mapfile -t opts < <(apt_view_opts "$1")
    shift 2
    "$cmd" "${opts[@]}" "$@"
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

# What libvirtd needs of the host before a lab host can run one in its own
# namespaces, as Debian's libvirt-daemon-system would make it (without its
# service): the user libvirt resolves before it reads qemu.conf, and the
# mount points the lab binds its private directories on.
ensure_libvirt_host() {
    if ! getent passwd libvirt-qemu >/dev/null; then
        useradd --system --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin libvirt-qemu || die "could not add the user libvirt-qemu"
        log "added the system user libvirt-qemu (libvirt asks for it)"
    fi
    mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt
}

# Debian's sshd for the lab's hosts when a test reaches them over qemu+ssh:
# extracted from its package into the cache, not installed, so that no
# host service is set up or started. Its privilege separation needs the
# user sshd, as the package would make it.
ensure_sshd() {
    local dir=$MIGLAB_CACHE/openssh
    ensure_packages openssh-client libwrap0
    if [ ! -x "$dir/usr/sbin/sshd" ]; then
        apt_update_once
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get download -q openssh-server >/dev/null 2>&1) ||
            { rm -rf "$tmp"; die "apt-get download openssh-server failed"; }
        mkdir -p "$dir"
        dpkg-deb -x "$tmp"/openssh-server_*.deb "$dir" || { rm -rf "$tmp"; die "extracting sshd failed"; }
        rm -rf "$tmp"
        log "extracted Debian's sshd into $dir"
    fi
    if ! getent passwd sshd >/dev/null; then
        useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd ||
            die "could not add the user sshd"
        log "added the system user sshd (sshd's privilege separation)"
    fi
}
