#!/usr/bin/env bash
# Idempotent set-up of a gr-scos checkout: Debian packages (only when missing),
# the virtual environment .venv (from Debian's python3, with its GNU Radio and numpy)
# and the project installed editable with its test extras.
# Runs as root, or as a normal user who may sudo.
#
# usage: bootstrap.sh [--runtime] [--packages-only]
#   --runtime        only what a deployed sensor runs on (the container image): no
#                    test, benchmark or build packages and no test extras; .venv is
#                    then not marked ready for make's targets
#   --packages-only  stop after the Debian packages (the image caches them in a
#                    layer that source changes do not invalidate)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"

runtime=false
packages_only=false
for argument in "$@"; do
    case "$argument" in
        --runtime) runtime=true ;;
        --packages-only) packages_only=true ;;
        *)
            echo "bootstrap: unknown argument '$argument' (usage: bootstrap.sh [--runtime] [--packages-only])" >&2
            exit 2
            ;;
    esac
done

runtime_packages=(
    gnuradio gr-osmosdr python3-uhd uhd-host
    python3-venv python3-numpy python3-yaml python3-zmq
)
# The tests, the benchmarks and the out-of-tree build of the blocks.
development_packages=(
    gnuradio-dev python3-pip
    postgresql wrk nginx-light chromium chromium-driver openssl
    cmake make g++ pkg-config git sudo
)
debian_packages=("${runtime_packages[@]}")
extras="[test]"
if [ "$runtime" = true ]; then
    extras=""
else
    debian_packages+=("${development_packages[@]}")
fi

# Package installs need root: run them directly as root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo > /dev/null; then
        sudo "$@"
    else
        echo "bootstrap: Debian packages are missing and sudo is not installed: run 'make' once as root" >&2
        exit 1
    fi
}

# The checkout's files belong to whoever owns it: under `sudo make ...` the venv is
# built as the invoking user, not as root.
as_owner() {
    if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        sudo -u "$SUDO_USER" -H "$@"
    else
        "$@"
    fi
}

missing=()
for pkg in "${debian_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "$packages_only" = true ]; then
    echo "bootstrap: Debian packages ready"
    exit 0
fi

if ! "$venv/bin/python" -c "import gnuradio.gr" 2>/dev/null; then
    echo "bootstrap: creating $venv"
    rm -rf "$venv"
    as_owner /usr/bin/python3 -m venv --system-site-packages "$venv"
fi

# Keep Debian's numpy: pin pip to the exact version the system interpreter has.
constraints="$venv/constraints.txt"
/usr/bin/python3 -c "import numpy; print(f'numpy=={numpy.__version__}')" |
    as_owner tee "$constraints" > /dev/null

as_owner "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --constraint "$constraints" --editable "$repo$extras"

numpy_path="$("$venv/bin/python" -c 'import numpy; print(numpy.__file__)')"
case "$numpy_path" in
    /usr/lib/python3/dist-packages/*) ;;
    *) echo "bootstrap: numpy resolved to $numpy_path, not Debian's" >&2; exit 1 ;;
esac
if [ "$runtime" = false ]; then
    as_owner touch "$venv/.bootstrapped"
fi
echo "bootstrap: ready ($venv)"
