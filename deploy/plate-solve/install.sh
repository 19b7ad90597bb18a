#!/usr/bin/env bash
# Install astrometry.net's solve-field and the Tycho-2 index files that solve a Seestar field
# (S50: ~1.3 x 0.7 deg at 2.4"/px; S30: ~2.1 x 1.2 deg at 4"/px), so that zemosaic-dask can
# plate-solve frames that carry no WCS (zemosaic.ingest.plate-solve: auto).
#
# Index scales: a field is solved by quads of 10 % to 100 % of its size, so the files with
# quads of 22'-30' (07), 30'-44' (08), 44'-60' (09) and 60'-2000' (10-19) are installed.
# Download ~195 MB, ~400 MB on disk, ~30 s on a fast mirror.
# Debian/Ubuntu, run as root. Safe to run again: apt-get skips what is already installed.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    echo "install.sh must run as root (try: sudo $0)" >&2
    exit 1
fi

packages=(
    astrometry.net
    astrometry-data-tycho2-07
    astrometry-data-tycho2-08
    astrometry-data-tycho2-09
    astrometry-data-tycho2-10-19
)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("${pkg}")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "astrometry.net and its Tycho-2 index files are already installed: ${packages[*]}"
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
    echo "installed: ${missing[*]}"
fi

solver=$(command -v solve-field || true)
if [[ -z ${solver} ]]; then
    echo "solve-field is not on PATH after installing astrometry.net" >&2
    exit 1
fi
echo "solve-field: ${solver} (astrometry.net $(dpkg-query -W -f='${Version}' astrometry.net))"
echo "index files: $(ls /usr/share/astrometry/index-tycho2-*.fits | wc -l) in /usr/share/astrometry"
