#!/usr/bin/env bash
# Installs the system packages keyscribe's renderers, tests and web app use (Debian, as root), and the
# npm packages it serves or samples from. Idempotent: what is already there is not fetched again.
set -euo pipefail
APT_PACKAGES=(libfluidsynth3 fluid-soundfont-gm musescore-general-soundfont-small)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
