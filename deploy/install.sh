#!/usr/bin/env bash
# Install, upgrade or remove atoms-appliance as a headless systemd service.
#
#   sudo deploy/install.sh [--hardware NAME] [--api-key-file FILE|-] [--agent-id ID]
#   sudo deploy/install.sh --uninstall
#
# Idempotent: running it again upgrades the code and changes nothing else. It never overwrites
# /etc/atoms-appliance/config.toml, and --uninstall keeps that file and the API key credential.
# Run with --help for every option. What it installs is listed in
# /opt/atoms-appliance/install-manifest, which --uninstall reads.
#
# --root DIR installs into a staging tree (an SD-card image being built, or a test): every path
# is prefixed with DIR, nothing is asked of apt, systemd or the running system, files are owned
# by root (when run as root) with their final modes, and the service user is created at the
# target's first boot by systemd-sysusers from /etc/sysusers.d/atoms-appliance.conf, after which
# systemd-tmpfiles gives /etc/atoms-appliance to that user's group
# (/etc/tmpfiles.d/atoms-appliance.conf). The venv is built in place and its paths rewritten to
# /opt/atoms-appliance, so build the image on the target's OS and architecture.
set -euo pipefail

readonly APP=atoms-appliance
readonly SERVICE_USER=atoms-appliance
readonly UNIT=atoms-appliance.service
readonly FAILED_UNIT=atoms-appliance-failed.service
readonly CRED_NAME=atoms_api_key
# Target paths: always used through "$ROOT" for the file system, and without it inside files.
readonly OPT=/opt/atoms-appliance
readonly VENV=$OPT/venv
readonly MANIFEST=$OPT/install-manifest
readonly ETC=/etc/atoms-appliance
readonly CONFIG=$ETC/config.toml
readonly CRED_DIR=$ETC/credentials
readonly CRED_PLAIN=$CRED_DIR/$CRED_NAME
readonly CRED_ENC=$CRED_DIR/$CRED_NAME.cred
readonly UNIT_DIR=/etc/systemd/system
readonly DROPIN=$UNIT_DIR/$UNIT.d/credential.conf
readonly AFFINITY_DROPIN=$UNIT_DIR/$UNIT.d/cpu-affinity.conf
readonly BLOCK_BEGIN="# >>> atoms-appliance hardware profile"
readonly BLOCK_END="# <<< atoms-appliance hardware profile"
readonly ASOUND_MARK="# atoms-appliance hardware profile:"
readonly CONFIG_BEGIN="# >>> atoms-appliance hardware profile settings"
readonly CONFIG_END="# <<< atoms-appliance hardware profile settings"

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SRC_DIR

ROOT=""
HARDWARE=""
API_KEY_FILE=""
AGENT_ID=""
CREDENTIAL_MODE=auto
LGPIO=auto
PIP_ARGS=""
PYTHON=/usr/bin/python3
UNINSTALL=0
START=1
MAKE_VENV=1
APT=1

MANIFEST_LINES=()   # "<kind> <target path>", written at the end of an install
CREDENTIAL_CHANGED=0

usage() {
    cat <<EOF
Usage: $0 [OPTIONS]

Install (or upgrade) atoms-appliance as the systemd service $UNIT.

  --hardware NAME      apply a hardware profile from deploy/hardware/: $(profiles | tr '\n' ' ')
                       (/etc/asound.conf, /boot/firmware/config.txt lines, config defaults)
  --api-key-file FILE  read the Atoms API key from FILE ("-": standard input). Without it, an
                       interactive run asks for the key when none is installed yet.
  --agent-id ID        agent_id for a new config.toml (an existing one is never changed)
  --credential MODE    auto (default), encrypted (systemd-creds) or plain (0600 root file)
  --lgpio MODE         auto (default: on a Raspberry Pi), yes or no: install lgpio in the venv
  --python PATH        Python for the venv (default: $PYTHON)
  --pip-args ARGS      extra pip arguments, e.g. "--index-url URL"
  --no-venv            do not create or upgrade the venv
  --no-start           install and enable, but do not (re)start the service
  --root DIR           install into a staging tree DIR (no apt, no systemctl, no users)
  --uninstall          remove what was installed; keep config.toml, the credential, the user
  -h, --help           this help
EOF
}

log() { printf '%s: %s\n' "$APP-install" "$*" >&2; }
die() { log "error: $*"; exit 1; }

profiles() { (cd "$SRC_DIR/deploy/hardware" && for d in */; do echo "${d%/}"; done); }

# 64-bit only: device/platform_support.py holds the list and the reason (the service, `make` and
# this script all ask it). It checks the userland of $PYTHON (the Python the venv is built with),
# the kernel's machine and dpkg's architecture: 32-bit Raspberry Pi OS runs a 64-bit kernel, so
# `uname -m` alone says aarch64 there. ATOMS_PLATFORM_MACHINE replaces all three probes (tests;
# checking what another board would get).
check_platform() {
    local python=$PYTHON reason probed=()
    [[ -x "$python" ]] || python=$(command -v python3 || true)
    [[ -n "$python" ]] || die "no Python 3 found (--python $PYTHON): install python3, then run this again"
    if command -v uname >/dev/null; then probed+=("$(uname -m)"); fi
    if command -v dpkg >/dev/null; then probed+=("$(dpkg --print-architecture)"); fi
    if ! reason=$("$python" "$SRC_DIR/device/platform_support.py" "${probed[@]}" 2>&1); then
        log "error: $reason"
        log "nothing was installed"
        exit 78
    fi
}

parse_args() {
    while (($#)); do
        case "$1" in
            --root) ROOT=${2:?--root needs a directory}; shift ;;
            --hardware) HARDWARE=${2:?--hardware needs a profile name}; shift ;;
            --api-key-file) API_KEY_FILE=${2:?--api-key-file needs a file or -}; shift ;;
            --agent-id) AGENT_ID=${2:?--agent-id needs a value}; shift ;;
            --credential) CREDENTIAL_MODE=${2:?--credential needs auto, encrypted or plain}; shift ;;
            --lgpio) LGPIO=${2:?--lgpio needs auto, yes or no}; shift ;;
            --python) PYTHON=${2:?--python needs a path}; shift ;;
            --pip-args) PIP_ARGS=${2?--pip-args needs a value}; shift ;;
            --no-venv) MAKE_VENV=0 ;;
            --no-start) START=0 ;;
            --uninstall) UNINSTALL=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
    case "$CREDENTIAL_MODE" in auto|encrypted|plain) ;; *) die "--credential: auto, encrypted or plain" ;; esac
    # Before anything is written: an install on a platform without the audio libraries' wheels would
    # stop half way (--uninstall still works everywhere).
    ((UNINSTALL)) || check_platform
    case "$LGPIO" in auto|yes|no) ;; *) die "--lgpio: auto, yes or no" ;; esac
    if [[ -n "$HARDWARE" && ! -d "$SRC_DIR/deploy/hardware/$HARDWARE" ]]; then
        die "unknown hardware profile '$HARDWARE'; choose one of: $(profiles | tr '\n' ' ')"
    fi
    if [[ -n "$ROOT" ]]; then
        mkdir -p "$ROOT"
        ROOT=$(cd "$ROOT" && pwd)
        [[ "$ROOT" != / ]] || ROOT=""
        APT=0
        START=0
    fi
    if [[ -n "$AGENT_ID" && ! "$AGENT_ID" =~ ^[A-Za-z0-9._:-]+$ ]]; then
        die "--agent-id: letters, digits and . _ : - only"
    fi
}

is_root() { [[ $EUID -eq 0 ]]; }
# True when we manage the live system (not a staging tree) and systemd runs it.
live_systemd() { [[ -z "$ROOT" && -d /run/systemd/system ]]; }
on_raspberry_pi() { grep -qs "Raspberry Pi" /proc/device-tree/model; }

# install_file SRC TARGET MODE [GROUP]: copy when the content or mode differs, so a re-run leaves
# files (and their mtimes) alone. Owner root; GROUP only on the live system (--root trees get
# root:root, fixed at first boot by systemd-tmpfiles).
install_file() {
    local src=$1 target=$2 mode=$3 group=${4:-root} dest="$ROOT$2"
    mkdir -p "$(dirname "$dest")"
    if ! [[ -f "$dest" && ! -L "$dest" ]] || ! cmp -s "$src" "$dest"; then
        local tmp
        tmp=$(mktemp "$dest.XXXXXX")
        cat "$src" >"$tmp"
        mv -f "$tmp" "$dest"
    fi
    set_owner_mode "$target" "$mode" "$group"
}

# set_owner_mode TARGET MODE [GROUP]
set_owner_mode() {
    local target=$1 mode=$2 group=${3:-root}
    [[ -n "$ROOT" ]] && group=root
    if is_root; then chown "root:$group" "$ROOT$target"; fi
    chmod "$mode" "$ROOT$target"
}

# make_dir TARGET MODE [GROUP]
make_dir() {
    mkdir -p "$ROOT$1"
    set_owner_mode "$@"
}

record() { MANIFEST_LINES+=("$1 $2"); }

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
install_packages() {
    ((APT)) || return 0
    if ! command -v apt-get >/dev/null; then
        log "no apt-get: install Python 3.11 venv, a C compiler and the ALSA headers yourself"
        return 0
    fi
    # pyalsaaudio builds from source (python3-dev, gcc, libasound2-dev); alsa-utils gives
    # arecord/aplay/alsamixer for troubleshooting.
    local packages=(python3-venv python3-dev gcc libasound2-dev alsa-utils) missing=() p
    # lgpio (gpiozero's pin factory on kernel 6.6+ and the Pi 5) has no aarch64 wheel on PyPI and
    # no wheel at all for Python 3.13 (Debian 13): pip builds its sdist, which needs swig (see
    # build_venv).
    if want_lgpio; then packages+=(swig); fi
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

want_lgpio() {
    case "$LGPIO" in
        yes) return 0 ;;
        no) return 1 ;;
        *) on_raspberry_pi ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# The service user: declared for systemd-sysusers, so an image gets it at first boot
# ---------------------------------------------------------------------------------------------
install_user() {
    local conf
    conf=$(mktemp)
    cat >"$conf" <<EOF
# atoms-appliance service user (written by deploy/install.sh). systemd-sysusers creates what is
# missing at boot and leaves existing users and groups alone. audio and gpio give access to
# /dev/snd/* and /dev/gpiochip* (the unit also sets SupplementaryGroups=).
u $SERVICE_USER - "Atoms voice appliance" /var/lib/atoms-appliance /usr/sbin/nologin
g audio -
g gpio -
m $SERVICE_USER audio
m $SERVICE_USER gpio
EOF
    install_file "$conf" /etc/sysusers.d/$APP.conf 0644
    rm -f "$conf"
    record file /etc/sysusers.d/$APP.conf
    [[ -z "$ROOT" ]] || return 0
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers /etc/sysusers.d/$APP.conf
    else
        getent group gpio >/dev/null || groupadd --system gpio
        getent group audio >/dev/null || groupadd --system audio
        id "$SERVICE_USER" >/dev/null 2>&1 ||
            useradd --system --user-group --home-dir /var/lib/atoms-appliance --no-create-home \
                --shell /usr/sbin/nologin --comment "Atoms voice appliance" "$SERVICE_USER"
        usermod -a -G audio,gpio "$SERVICE_USER"
    fi
}

install_tmpfiles() {
    local conf
    conf=$(mktemp)
    cat >"$conf" <<EOF
# atoms-appliance (written by deploy/install.sh): the service reads its configuration through
# its group; the credential stays root's (systemd hands the service a copy).
d $ETC 0750 root $SERVICE_USER -
z $CONFIG 0640 root $SERVICE_USER -
d $CRED_DIR 0700 root root -
EOF
    install_file "$conf" /etc/tmpfiles.d/$APP.conf 0644
    rm -f "$conf"
    record file /etc/tmpfiles.d/$APP.conf
}

# ---------------------------------------------------------------------------------------------
# The program: a venv under /opt, upgraded only when the source changed
# ---------------------------------------------------------------------------------------------
# The files pip needs to build the project (what build_venv copies).
source_paths() {
    local p
    for p in pyproject.toml README.md LICENSE LICENSE.txt device hw; do
        [[ -e "$SRC_DIR/$p" ]] && echo "$p"
    done
    return 0
}

source_digest() {
    # Content, not mtimes: a fresh checkout of the same commit is the same install.
    local paths
    mapfile -t paths < <(source_paths)
    (
        cd "$SRC_DIR"
        find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
        printf 'pip-args=%s lgpio=%s python=%s\n' "$PIP_ARGS" "$(want_lgpio && echo yes || echo no)" \
            "$("$PYTHON" -c 'import sys; print(sys.version)')"
    ) | sha256sum | cut -d' ' -f1
}

install_venv() {
    local venv="$ROOT$VENV" stamp="$ROOT$VENV/.atoms-appliance-source" digest
    if ((MAKE_VENV)); then
        [[ -x "$PYTHON" ]] || die "no Python at $PYTHON (install python3-venv, or pass --python)"
        digest=$(source_digest)
        if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c '' 2>/dev/null &&
            [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
            log "venv is up to date ($VENV)"
        else
            build_venv "$venv" "$stamp" "$digest"
        fi
    fi
    if [[ -d "$venv" ]]; then
        record tree "$VENV"
        mkdir -p "$ROOT/usr/local/bin"
        if [[ "$(readlink "$ROOT/usr/local/bin/$APP" 2>/dev/null)" != "$VENV/bin/$APP" ]]; then
            ln -sfn "$VENV/bin/$APP" "$ROOT/usr/local/bin/$APP"
        fi
        record link "/usr/local/bin/$APP"
    fi
}

build_venv() {
    local venv=$1 stamp=$2 digest=$3 stage pip_args=() paths
    log "building the venv in $VENV (a few minutes on a Pi: pyalsaaudio compiles)"
    # Build from a copy: pip must not leave build/ and *.egg-info in the source tree, and the
    # checkout may be read-only.
    stage=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the trap runs after this function's locals are gone
    trap "rm -rf '$stage'" EXIT
    mapfile -t paths < <(source_paths)
    tar -C "$SRC_DIR" --exclude=__pycache__ --exclude='*.pyc' -cf - "${paths[@]}" |
        tar -C "$stage" -xf -
    if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv"   # its base Python is gone (OS upgrade): start over
    fi
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
    read -r -a pip_args <<<"$PIP_ARGS"
    if want_lgpio; then check_lgpio_buildable "$venv" "${pip_args[@]}"; fi
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off \
        --upgrade "${pip_args[@]}" "$stage"
    if want_lgpio; then
        # PYPI=1 is lgpio's own switch to compile its bundled C library into the module, as for
        # its PyPI wheels: no liblgpio-dev needed, which only Raspberry Pi OS packages.
        PYPI=1 "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
            --progress-bar off "${pip_args[@]}" "lgpio>=0.2.2"
    fi
    rm -rf "$stage"
    trap - EXIT
    if [[ -n "$ROOT" ]]; then
        # A venv records its own absolute path (script shebangs, activate, pyvenv.cfg): make it
        # the path it will have on the target.
        local f
        while IFS= read -r f; do
            sed -i "s#$venv#$VENV#g" "$f"
        done < <(grep -rlIF -- "$venv" "$venv/bin" "$venv/pyvenv.cfg" || true)
    fi
    printf '%s\n' "$digest" >"$stamp"
}

# check_lgpio_buildable VENV [PIP_ARGS...]: lgpio installs either from a wheel (PyPI has them for
# x86_64 and Python <= 3.12; a wheelhouse may have more) or from its sdist, which needs swig. Say
# so before the long build instead of failing at its end; with --root there is no apt to fetch swig.
check_lgpio_buildable() {
    local venv=$1 tmp
    shift
    command -v swig >/dev/null && return 0
    tmp=$(mktemp -d)
    if "$venv/bin/python" -m pip download --disable-pip-version-check --no-input --quiet --no-deps \
        --only-binary=:all: -d "$tmp" "$@" "lgpio>=0.2.2" >/dev/null 2>&1; then
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    die "lgpio has no wheel for $("$venv/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.machine())') and building it needs swig: install it (apt-get install swig${ROOT:+, on the machine that runs --root}) or pass --pip-args \"--find-links DIR\" with an lgpio wheel in DIR; or --lgpio no"
}

install_files() {
    make_dir "$OPT" 0755
    make_dir "$OPT/libexec" 0755
    install_file "$SRC_DIR/deploy/error_leds.py" "$OPT/libexec/$APP-error-leds" 0755
    record file "$OPT/libexec/$APP-error-leds"
    local profile f
    for profile in $(profiles); do
        for f in "$SRC_DIR/deploy/hardware/$profile"/*; do
            install_file "$f" "$OPT/share/hardware/$profile/$(basename "$f")" 0644
            record file "$OPT/share/hardware/$profile/$(basename "$f")"
        done
    done
    for f in hardware.md wiring.svg; do
        if [[ -f "$SRC_DIR/docs/$f" ]]; then
            install_file "$SRC_DIR/docs/$f" "$OPT/share/doc/$f" 0644
            record file "$OPT/share/doc/$f"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Configuration: written once, never overwritten
# ---------------------------------------------------------------------------------------------
install_config() {
    make_dir "$ETC" 0750 "$SERVICE_USER"
    if [[ ! -e "$ROOT$CONFIG" ]]; then
        local conf
        conf=$(mktemp)
        {
            echo "# atoms-appliance configuration (created by deploy/install.sh; it never overwrites it)."
            echo "# Precedence: built-in defaults < this file < ATOMS_* environment < the systemd"
            echo "# credential atoms_api_key. Show the effective settings: atoms-appliance config"
            echo "# The API key does not belong here: re-run install.sh --api-key-file FILE."
            echo
            if [[ -n "$AGENT_ID" ]]; then
                echo "agent_id = \"$AGENT_ID\""
            else
                echo "# agent_id = \"your-agent-id\"    # required"
            fi
            if [[ -n "$HARDWARE" ]]; then
                echo
                profile_config_block
            fi
        } >"$conf"
        install_file "$conf" "$CONFIG" 0640 "$SERVICE_USER"
        rm -f "$conf"
        log "wrote $CONFIG"
    else
        set_owner_mode "$CONFIG" 0640 "$SERVICE_USER"
        if [[ -n "$HARDWARE" ]]; then
            update_profile_settings
        elif [[ -n "$AGENT_ID" ]]; then
            log "kept the existing $CONFIG: set agent_id there yourself"
        fi
    fi
}

# The profile's settings, between markers so that another --hardware can replace them. Written
# before any [table] of the file: keys after a table header would belong to that table.
profile_config_block() {
    echo "$CONFIG_BEGIN: $HARDWARE (install.sh --hardware NAME replaces this block)"
    cat "$SRC_DIR/deploy/hardware/$HARDWARE/config.toml"
    echo "$CONFIG_END"
}

# Re-run with --hardware on an existing config.toml: replace our marked block (the rest of the
# file is the user's and stays as it is). A file without our block is not touched: we say how.
update_profile_settings() {
    local file="$ROOT$CONFIG" defaults="$OPT/share/hardware/$HARDWARE/config.toml" tmp
    if ! grep -qF "$CONFIG_BEGIN" "$file"; then
        log "kept the existing $CONFIG: it has no profile block of ours, so the '$HARDWARE' settings" \
            "were NOT applied; copy the lines of $defaults into it (replacing any earlier" \
            "capture_device, playback_device, aec and pin lines) and restart the service"
        return 0
    fi
    if grep -qF "$CONFIG_BEGIN: $HARDWARE (" "$file"; then
        return 0   # the same profile again: nothing to change (edits inside the block are kept)
    fi
    local block
    block=$(mktemp)
    tmp=$(mktemp)
    profile_config_block >"$block"
    # In place of the old block, so it stays where it was (before any [table]).
    awk -v begin="$CONFIG_BEGIN" -v end="$CONFIG_END" -v block="$block" '
        index($0, begin) == 1 { skip = 1; while ((getline line < block) > 0) print line; next }
        skip && index($0, end) == 1 { skip = 0; next }
        !skip { print }
    ' "$file" >"$tmp"
    rm -f "$block"
    # The user may have set one of the profile's keys outside the block: TOML forbids a key twice.
    if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null &&
        ! python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$tmp" 2>/dev/null; then
        rm -f "$tmp"
        log "WARNING: kept $CONFIG unchanged: with the '$HARDWARE' settings it would set a key twice;" \
            "remove your own capture_device/playback_device/aec/pin lines or edit the block by hand"
        return 0
    fi
    cat "$tmp" >"$file"   # in place: keep owner and mode
    rm -f "$tmp"
    log "updated the hardware profile settings in $CONFIG to '$HARDWARE' (the rest of the file is kept)"
}

# ---------------------------------------------------------------------------------------------
# The API key: a systemd credential, never an environment variable or a command-line argument
# ---------------------------------------------------------------------------------------------
read_api_key() {
    # Prints the key on stdout (captured by the caller into a variable, never into argv).
    local key=""
    if [[ "$API_KEY_FILE" == - ]]; then
        if [[ -t 0 ]]; then
            read -r -s -p "Atoms API key (input hidden): " key; echo >&2
        else
            IFS= read -r key || true
        fi
    elif [[ -n "$API_KEY_FILE" ]]; then
        IFS= read -r key <"$API_KEY_FILE" || true
    elif [[ -t 0 && ! -e "$ROOT$CRED_PLAIN" && ! -e "$ROOT$CRED_ENC" ]]; then
        read -r -s -p "Atoms API key (input hidden, empty to skip): " key; echo >&2
    fi
    key=${key%$'\r'}
    key=${key#"${key%%[![:space:]]*}"}
    key=${key%"${key##*[![:space:]]}"}
    printf '%s' "$key"
}

use_encryption() {
    case "$CREDENTIAL_MODE" in
        plain) return 1 ;;
        encrypted)
            command -v systemd-creds >/dev/null || die "--credential encrypted: no systemd-creds"
            return 0 ;;
    esac
    # auto: a staging tree would be encrypted with this machine's host key, which the target
    # does not have; systemd-creds arrived in systemd 250.
    [[ -z "$ROOT" ]] && command -v systemd-creds >/dev/null &&
        printf 'probe' | systemd-creds encrypt --name=probe - - >/dev/null 2>&1
}

install_credential() {
    make_dir "$CRED_DIR" 0700
    local key
    if [[ -n "$API_KEY_FILE" && "$API_KEY_FILE" != - && ! -r "$API_KEY_FILE" ]]; then
        die "cannot read $API_KEY_FILE"
    fi
    key=$(read_api_key)
    if [[ -n "$key" ]]; then
        [[ "$key" != *[[:space:]]* ]] || die "the API key contains whitespace: wrong file?"
        if use_encryption; then
            write_encrypted_credential "$key"
        else
            write_plain_credential "$key"
        fi
    fi
    key=""
    if [[ -f "$ROOT$CRED_ENC" ]]; then
        set_owner_mode "$CRED_ENC" 0600
        write_dropin "LoadCredentialEncrypted=$CRED_NAME:$CRED_ENC"
    elif [[ -f "$ROOT$CRED_PLAIN" ]]; then
        set_owner_mode "$CRED_PLAIN" 0600
        write_dropin "LoadCredential=$CRED_NAME:$CRED_PLAIN"
    else
        log "no API key installed: the service will stop with a configuration error until you run"
        log "  sudo $0 --api-key-file FILE"
        write_dropin ""
    fi
}

write_encrypted_credential() {
    local key=$1 tmp
    if [[ -f "$ROOT$CRED_ENC" ]] &&
        [[ "$(systemd-creds decrypt --name="$CRED_NAME" "$ROOT$CRED_ENC" - 2>/dev/null)" == "$key" ]]; then
        rm -f "$ROOT$CRED_PLAIN"
        return 0   # same key: keep the file (encryption is randomised, a re-run would differ)
    fi
    tmp=$(umask 077 && mktemp "$ROOT$CRED_DIR/.cred.XXXXXX")
    # printf is a builtin: the key goes through a pipe, never through a command line.
    printf '%s' "$key" | systemd-creds encrypt --name="$CRED_NAME" - "$tmp"
    mv -f "$tmp" "$ROOT$CRED_ENC"
    rm -f "$ROOT$CRED_PLAIN"   # no plaintext copy left behind when switching to encryption
    CREDENTIAL_CHANGED=1
    log "stored the API key encrypted in $CRED_ENC"
}

write_plain_credential() {
    local key=$1 tmp
    if [[ -f "$ROOT$CRED_PLAIN" && "$(cat "$ROOT$CRED_PLAIN")" == "$key" ]]; then
        rm -f "$ROOT$CRED_ENC"
        return 0
    fi
    tmp=$(umask 077 && mktemp "$ROOT$CRED_DIR/.cred.XXXXXX")
    printf '%s' "$key" >"$tmp"
    mv -f "$tmp" "$ROOT$CRED_PLAIN"
    rm -f "$ROOT$CRED_ENC"
    CREDENTIAL_CHANGED=1
    log "stored the API key in $CRED_PLAIN (root only, 0600)"
}

write_dropin() {
    local line=$1 conf
    if [[ -z "$line" ]]; then
        rm -f "$ROOT$DROPIN"
        rmdir "$ROOT$(dirname "$DROPIN")" 2>/dev/null || true
        return 0
    fi
    conf=$(mktemp)
    cat >"$conf" <<EOF
# Written by deploy/install.sh: where systemd finds the API key. The service reads its copy
# from \$CREDENTIALS_DIRECTORY/$CRED_NAME. Re-run install.sh to change the key.
[Service]
$line
EOF
    install_file "$conf" "$DROPIN" 0644
    rm -f "$conf"
    record file "$DROPIN"
}

# ---------------------------------------------------------------------------------------------
# systemd units
# ---------------------------------------------------------------------------------------------
# /dev/gpiochip* to the gpio group (0660), as Raspberry Pi OS's udev rules do; plain Debian leaves
# them root's, and the service (not root) could not open its buttons and LEDs.
install_gpio_udev_rule() {
    local rule=/etc/udev/rules.d/60-$APP-gpio.rules others conf
    others=$(grep -ls 'gpiochip' "$ROOT"/usr/lib/udev/rules.d/*.rules "$ROOT"/lib/udev/rules.d/*.rules \
        "$ROOT"/etc/udev/rules.d/*.rules 2>/dev/null | grep -v -- "/60-$APP-gpio.rules\$" || true)
    if [[ -n "$others" && ! -f "$ROOT$rule" ]]; then
        return 0   # the OS has its own rule (Raspberry Pi OS: 99-com.rules)
    fi
    conf=$(mktemp)
    cat >"$conf" <<EOF
# Written by deploy/install.sh ($APP): GPIO chips for the gpio group, as on Raspberry Pi OS.
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
EOF
    install_file "$conf" "$rule" 0644
    rm -f "$conf"
    record file "$rule"
    if live_systemd && command -v udevadm >/dev/null; then
        udevadm control --reload 2>/dev/null || true
        udevadm trigger --subsystem-match=gpio --action=add 2>/dev/null || true
        udevadm settle 2>/dev/null || true
    fi
}

install_units() {
    local unit
    for unit in "$UNIT" "$FAILED_UNIT"; do
        install_file "$SRC_DIR/systemd/$unit" "$UNIT_DIR/$unit" 0644
        record file "$UNIT_DIR/$unit"
    done
}

# The whole service on the last CPU (CPUAffinity=, set by systemd before it starts the process:
# device/service/cpu.py says why one CPU, and the service only checks what it got). A drop-in,
# not the unit: the number of CPUs is this machine's, and a CPUAffinity= naming a CPU that does
# not exist fails every start. With --root the target's CPUs are unknown: no pinning.
install_cpu_affinity() {
    local online last conf
    if [[ -n "$ROOT" ]]; then
        log "--root: the service is not pinned to a CPU (the target's CPUs are unknown here); on the"
        log "  device: sudo $0 again, or systemctl edit $APP with [Service] CPUAffinity=N"
        return 0
    fi
    online=$(cat /sys/devices/system/cpu/online 2>/dev/null || echo 0)
    last=${online##*[-,]}
    if [[ "$online" != *[-,]* || ! "$last" =~ ^[0-9]+$ ]]; then
        rm -f "$AFFINITY_DROPIN"   # one CPU: nothing to choose
        return 0
    fi
    conf=$(mktemp)
    cat >"$conf" <<EOF
# Written by deploy/install.sh: every thread of the service on CPU $last, the last of $online
# (on a Raspberry Pi every interrupt goes to CPU 0). Change it with: systemctl edit $APP
[Service]
CPUAffinity=$last
EOF
    install_file "$conf" "$AFFINITY_DROPIN" 0644
    rm -f "$conf"
    record file "$AFFINITY_DROPIN"
}

# ---------------------------------------------------------------------------------------------
# Hardware profile: /etc/asound.conf and a marked block in the firmware's config.txt
# ---------------------------------------------------------------------------------------------
boot_config() {
    local c
    for c in /boot/firmware/config.txt /boot/config.txt; do
        if [[ -f "$ROOT$c" ]]; then echo "$c"; return 0; fi
    done
    return 1
}

apply_hardware() {
    if [[ -z "$HARDWARE" ]]; then
        carry_over_hardware
        return 0
    fi
    local dir="$SRC_DIR/deploy/hardware/$HARDWARE" asound=/etc/asound.conf bootcfg
    if [[ -f "$ROOT$asound" ]] && ! grep -q "^$ASOUND_MARK" "$ROOT$asound"; then
        local backup="$asound.atoms-appliance.orig" n=1
        while [[ -e "$ROOT$backup" ]]; do backup="$asound.atoms-appliance.orig.$n"; n=$((n + 1)); done
        cp -p "$ROOT$asound" "$ROOT$backup"
        log "saved the previous $asound as $backup"
    fi
    install_file "$dir/asound.conf" "$asound" 0644
    record asound "$asound"
    if bootcfg=$(boot_config); then
        write_boot_block "$ROOT$bootcfg" "$dir/config.txt"
        record block "$bootcfg"
    elif grep -qv '^[[:space:]]*\(#.*\)\?$' "$dir/config.txt"; then
        # The profile needs firmware lines (an overlay for its sound card): without them the card
        # never appears, and the service would fail with "no such device" much later.
        log "WARNING: ************************************************************************"
        log "WARNING: no /boot/firmware/config.txt (or /boot/config.txt) under ${ROOT:-/}:"
        log "WARNING: the '$HARDWARE' profile's firmware settings were NOT applied. Add these"
        log "WARNING: lines to the firmware config.txt yourself and reboot, or the sound card"
        log "WARNING: will not appear:"
        grep -v '^[[:space:]]*\(#.*\)\?$' "$dir/config.txt" | sed 's/^/        /' >&2
        log "WARNING: ************************************************************************"
    fi
}

# Without --hardware, an upgrade leaves the applied profile alone and keeps it in the manifest.
carry_over_hardware() {
    local kind path
    [[ -f "$ROOT$MANIFEST" ]] || return 0
    while read -r kind path; do
        case "$kind" in asound|block) record "$kind" "$path" ;; esac
    done <"$ROOT$MANIFEST"
}

# Replace our marked block (or append one) so that it appears exactly once. "[all]" first: lines
# appended after a conditional section such as [pi4] would apply to that model only.
write_boot_block() {
    local file=$1 profile_lines=$2 tmp
    tmp=$(mktemp)
    strip_boot_block "$file" >"$tmp"
    {
        echo "$BLOCK_BEGIN: $HARDWARE (deploy/install.sh; --uninstall removes it)"
        echo "[all]"
        sed '/^\[all\]$/d' "$profile_lines"
        echo "$BLOCK_END"
    } >>"$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        cat "$tmp" >"$file"   # in place: keep the FAT file system's owner and mode
        rm -f "$tmp"
        log "updated $(basename "$file"): reboot for the firmware settings to apply"
    fi
}

strip_boot_block() {
    awk -v begin="$BLOCK_BEGIN" -v end="$BLOCK_END" '
        index($0, begin) == 1 { skip = 1; next }
        skip && index($0, end) == 1 { skip = 0; next }
        !skip { print }
    ' "$1"
}

write_manifest() {
    local tmp
    tmp=$(mktemp)
    {
        echo "# Installed by deploy/install.sh; read by --uninstall. <kind> <path>"
        printf '%s\n' "${MANIFEST_LINES[@]}" | LC_ALL=C sort -u
    } >"$tmp"
    install_file "$tmp" "$MANIFEST" 0644
    rm -f "$tmp"
}

# ---------------------------------------------------------------------------------------------
# Start, and check
# ---------------------------------------------------------------------------------------------
activate() {
    if ! live_systemd; then
        [[ -n "$ROOT" ]] || log "systemd is not running: enable $UNIT yourself"
        return 0
    fi
    systemd-tmpfiles --create /etc/tmpfiles.d/$APP.conf
    systemctl daemon-reload
    systemctl enable "$UNIT" >/dev/null
    if ((START)); then
        # reset-failed: an earlier crash loop must not keep the start limit engaged.
        systemctl reset-failed "$UNIT" "$FAILED_UNIT" 2>/dev/null || true
        if ! systemctl restart "$UNIT"; then
            log "error: $UNIT did not start. Its last log lines:"
            journalctl -u "$UNIT" -n 25 --no-pager -o cat >&2 || true
            run_doctor
            die "fix what the log and doctor say above, then: sudo systemctl restart $APP"
        fi
        log "started $UNIT (systemctl status $APP; journalctl -u $APP -f)"
    fi
}

run_doctor() {
    local bin="$ROOT$VENV/bin/$APP"
    [[ -z "$ROOT" && -x "$bin" ]] || return 0
    "$bin" --help 2>/dev/null | grep -qw doctor || return 0
    log "running '$APP doctor' as $SERVICE_USER"
    # As the service runs: its user and groups (so that missing access shows up) and its key (the
    # credential, handed over by systemd as to the unit). Its verdict is advice only.
    local cred=()
    if [[ -f "$CRED_ENC" ]]; then
        cred=(-p "LoadCredentialEncrypted=$CRED_NAME:$CRED_ENC")
    elif [[ -f "$CRED_PLAIN" ]]; then
        cred=(-p "LoadCredential=$CRED_NAME:$CRED_PLAIN")
    fi
    if live_systemd && command -v systemd-run >/dev/null; then
        systemd-run --quiet --wait --pipe --collect -p User="$SERVICE_USER" -p Group="$SERVICE_USER" \
            -p "SupplementaryGroups=audio gpio" -p WorkingDirectory=/ "${cred[@]}" "$bin" doctor ||
            log "doctor reported problems (see above)"
    else
        (cd / && runuser -u "$SERVICE_USER" -- "$bin" doctor) || log "doctor reported problems (see above)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Uninstall
# ---------------------------------------------------------------------------------------------
uninstall() {
    if live_systemd; then
        systemctl disable --now "$UNIT" 2>/dev/null || true
        systemctl stop "$FAILED_UNIT" 2>/dev/null || true
    fi
    if [[ ! -f "$ROOT$MANIFEST" ]]; then
        log "nothing to remove: no $MANIFEST"
        return 0
    fi
    local kind path
    while read -r kind path; do
        case "$kind" in
            file|link) rm -f "$ROOT$path" ;;
            tree)
                # Only ever a tree under /opt/atoms-appliance, whatever the manifest says.
                if [[ "$path" == "$OPT"/* ]]; then rm -rf -- "$ROOT$path"; fi ;;
            asound) restore_asound "$path" ;;
            block)
                if [[ -f "$ROOT$path" ]] && grep -qF "$BLOCK_BEGIN" "$ROOT$path"; then
                    local tmp
                    tmp=$(mktemp)
                    strip_boot_block "$ROOT$path" >"$tmp"
                    cat "$tmp" >"$ROOT$path"
                    rm -f "$tmp"
                fi ;;
        esac
    done < <(grep -v '^#' "$ROOT$MANIFEST")
    rm -f "$ROOT$MANIFEST"
    # Directories we created, if now empty; never /etc/atoms-appliance (config and key stay).
    local d
    for d in "$ROOT$UNIT_DIR/$UNIT.d" "$ROOT$OPT"/share/hardware/* "$ROOT$OPT/share/hardware" \
        "$ROOT$OPT/share/doc" "$ROOT$OPT/share" "$ROOT$OPT/libexec" "$ROOT$OPT"; do
        if [[ -d "$d" ]]; then rmdir "$d" 2>/dev/null || true; fi
    done
    if live_systemd; then systemctl daemon-reload; fi
    log "removed $APP; kept $CONFIG, the API key in $CRED_DIR, /var/lib/atoms-appliance and" \
        "the user $SERVICE_USER"
}

restore_asound() {
    local path=$1 backup
    [[ -f "$ROOT$path" ]] && grep -q "^$ASOUND_MARK" "$ROOT$path" || return 0
    rm -f "$ROOT$path"
    # The oldest backup is what the system had before our first install.
    backup="$ROOT$path.atoms-appliance.orig"
    if [[ -f "$backup" ]]; then
        mv -f "$backup" "$ROOT$path"
        log "restored the previous $path"
    fi
}

main() {
    parse_args "$@"
    if ! is_root && [[ -z "$ROOT" ]]; then die "run as root (sudo), or use --root DIR"; fi
    umask 022
    if ((UNINSTALL)); then
        uninstall
        return 0
    fi
    install_packages
    install_user
    install_tmpfiles
    install_files
    install_venv
    install_config
    install_credential
    install_units
    install_cpu_affinity
    install_gpio_udev_rule
    apply_hardware
    write_manifest
    activate
    if ((CREDENTIAL_CHANGED)) && live_systemd && ((START == 0)); then
        log "the API key changed: systemctl restart $APP (a reload does not re-read credentials)"
    fi
    run_doctor
    if [[ -n "$ROOT" ]]; then
        # Say exactly what was staged, so an image build can be checked (and nothing is a surprise).
        log "staged into $ROOT:"
        grep -v '^#' "$ROOT$MANIFEST" | while read -r kind path; do
            printf '    %-8s %s\n' "$kind" "$ROOT$path" >&2
        done
        printf '    %-8s %s\n' config "$ROOT$CONFIG" >&2
    fi
    log "done"
}

main "$@"
