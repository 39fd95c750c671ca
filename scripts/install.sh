#!/usr/bin/env bash
# The one install for a fresh Debian machine (README, .ci/run and the Dockerfile all call it):
# Debian packages, a virtual environment in .venv, and this package with its test extra.
# Idempotent: a second run installs nothing new. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

# orthanc: the PACS of the demo and the tests; dcmtk: independent DICOM peers (storescu, echoscu,
# findscu, storescp, dump2dcm); dicom3tools: dciodvfy; libjpeg-turbo-progs: jpegtran (lossless
# rotation, progressive to baseline); orthanc's worklist plugin ships in the orthanc package.
PACKAGES=(orthanc dcmtk dicom3tools libjpeg-turbo-progs libimage-exiftool-perl)
python3 -m venv --help >/dev/null 2>&1 || PACKAGES+=(python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install.sh: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV="${PHOTO_GATEWAY_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
echo "install.sh: ready ($VENV/bin/photo-gateway)" >&2
