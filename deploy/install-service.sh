#!/usr/bin/env bash
# Installs the gr-scos sensor as systemd services: the system user scos, the units of
# deploy/systemd/ rendered for a virtual environment, and the settings file
# /etc/gr-scos/gr-scos.conf (from deploy/gr-scos.conf.example, only when there is
# none: an operator's file is never replaced). Idempotent: a second run changes
# nothing.
#
# usage: install-service.sh [--prefix VENV] [--root DIR]
#   --prefix VENV  the virtual environment the services run (default: this
#                  checkout's .venv, as deploy/bootstrap.sh makes it)
#   --root DIR     install the files under DIR instead of / (default: $DESTDIR), for
#                  packaging and tests: no user is created and systemctl is not run
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$repo/.venv"
root="${DESTDIR:-}"

user=scos
# The group that Debian's udev rules for RTL-SDR and HackRF give USB radios to.
sdr_group=plugdev
state_dir=/var/lib/gr-scos
config_dir=/etc/gr-scos
config_file="$config_dir/gr-scos.conf"
example="$repo/deploy/gr-scos.conf.example"
unit_dir=/etc/systemd/system
templates="$repo/deploy/systemd"
units=(gr-scos.target gr-scos-api.service gr-scos-scheduler.service)

say() { echo "install-service: $*"; }
die() {
    echo "install-service: error: $*" >&2
    exit 1
}
usage() { sed -n '/^# usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --prefix | --root)
            [ "$#" -ge 2 ] || die "$1 needs a directory"
            if [ "$1" = --prefix ]; then prefix="$2"; else root="$2"; fi
            shift 2
            ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --root=*) root="${1#*=}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root is not a directory"
    root="$(cd "$root" && pwd)"
    [ "$root" != / ] || root=""
fi
real_install=false
[ -n "$root" ] || real_install=true

[ -d "$prefix" ] || die "no virtual environment $prefix: set up the checkout first (make, or deploy/bootstrap.sh), or pass --prefix"
prefix="$(cd "$prefix" && pwd)"
# The path goes into ExecStart= and a sed replacement: no spaces, no systemd
# specifiers (%), nothing sed would read.
case "$prefix" in
    *[!A-Za-z0-9._/+-]*) die "--prefix $prefix: only letters, digits and . _ / + - are supported" ;;
esac
# ProtectHome=yes hides these from the services, which would then fail to start.
check_visible() {
    case "$1/" in
        /home/* | /root/* | /run/user/*)
            die "$1 is under /home, /root or /run/user, which the services cannot see (ProtectHome=yes): put the checkout elsewhere, e.g. /opt/gr-scos"
            ;;
    esac
}
check_visible "$prefix"
for program in python gr-scos; do
    [ -x "$prefix/bin/$program" ] || die "$prefix/bin/$program is missing: is gr-scos installed in $prefix? (make, or deploy/bootstrap.sh)"
done
# An editable install (deploy/bootstrap.sh makes one) runs the checkout's sources.
source_file="$("$prefix/bin/python" -c 'import importlib.util; print(importlib.util.find_spec("grscos").origin)')" ||
    die "$prefix/bin/python cannot find the grscos package"
check_visible "$source_file"

if [ "$real_install" = true ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo make install-service), or install under a directory with --root"

    if ! getent group "$sdr_group" > /dev/null; then
        groupadd --system "$sdr_group"
        say "created the group $sdr_group"
    fi
    if ! getent group "$user" > /dev/null; then
        groupadd --system "$user"
        say "created the group $user"
    fi
    if ! getent passwd "$user" > /dev/null; then
        useradd --system --gid "$user" --home-dir "$state_dir" --no-create-home \
            --shell /usr/sbin/nologin --comment "gr-scos spectrum sensor" "$user"
        say "created the system user $user"
    fi
    # The units add the group themselves (SupplementaryGroups=); membership also lets
    # an operator run gr-scos acquire as scos on a USB radio.
    case " $(id -nG "$user") " in
        *" $sdr_group "*) ;;
        *)
            usermod --append --groups "$sdr_group" "$user"
            say "added $user to the group $sdr_group (USB radios)"
            ;;
    esac
    # StateDirectory= creates it too, but only when a service starts: gr-scos users
    # add must work before that.
    if [ ! -d "$state_dir" ]; then
        install -d -o "$user" -g "$user" -m 0750 "$state_dir"
        say "created $state_dir"
    fi
fi

# Files are prepared in a private directory. Only a changed one is written, beside its
# destination and then renamed over it: a unit or the settings file is never seen
# half-written, and an unchanged installation is not touched at all.
work="$(mktemp -d)"
staged=""
trap 'rm -rf "$work"; rm -f "$staged"' EXIT
# put FILE DESTINATION MODE [GROUP]
put() {
    staged="$(mktemp "$(dirname "$2")/.gr-scos-install.XXXXXX")"
    cat "$1" > "$staged"
    chmod "$3" "$staged"
    if [ "$#" -ge 4 ]; then
        chgrp "$4" "$staged"
    fi
    mv -f "$staged" "$2"
    staged=""
}

mkdir -p "$root$unit_dir"
changed=false
for unit in "${units[@]}"; do
    destination="$root$unit_dir/$unit"
    sed "s|@PREFIX@|$prefix|g" "$templates/$unit" > "$work/$unit"
    if grep -q '@[A-Z_]*@' "$work/$unit"; then
        die "$templates/$unit: a placeholder is left after rendering: $(grep -o '@[A-Z_]*@' "$work/$unit" | head -n 1)"
    fi
    if cmp -s "$work/$unit" "$destination"; then
        say "$destination is up to date"
    else
        put "$work/$unit" "$destination" 0644
        say "installed $destination"
        changed=true
    fi
done

if [ ! -d "$root$config_dir" ]; then
    if [ "$real_install" = true ]; then
        install -d -o root -g "$user" -m 0750 "$config_dir"
    else
        install -d -m 0750 "$root$config_dir"
    fi
fi
if [ -e "$root$config_file" ]; then
    say "keeping $root$config_file"
else
    [ -f "$example" ] || die "$example is missing: it is the template of $config_file"
    # SCOS_HOME set in the file as well as in the units: gr-scos run by hand (users
    # add, config check) reads this file and must find the services' state.
    {
        cat "$example"
        printf '\n# Set by deploy/install-service.sh: the state directory of the systemd services.\n'
        printf 'SCOS_HOME=%s\n' "$state_dir"
    } > "$work/settings"
    # It may hold secrets (database password, OAuth client secret): readable by scos.
    if [ "$real_install" = true ]; then
        put "$work/settings" "$root$config_file" 0640 "$user"
    else
        put "$work/settings" "$root$config_file" 0640
    fi
    say "created $root$config_file from $example: edit it (SCOS_SIGAN, ...)"
fi

if [ "$real_install" = false ]; then
    say "installed under $root; no user was created and systemctl was not run"
    exit 0
fi

run_as_scos="runuser -u $user -- $prefix/bin/gr-scos"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "${units[@]}"
    if [ "$changed" = true ] && systemctl --quiet is-active gr-scos.target; then
        say "the units changed: systemctl restart gr-scos.target applies them"
    fi
else
    say "systemd is not running here; where it runs, enable the services with:"
    echo "    systemctl daemon-reload && systemctl enable ${units[*]}"
fi
cat << EOF
install-service: next steps
    $run_as_scos config check        # settings, configuration and the radio
    $run_as_scos users add admin --admin   # prints the admin's API token
    systemctl start gr-scos.target
    journalctl -u gr-scos-api -u gr-scos-scheduler -f
EOF
