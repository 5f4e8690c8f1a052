#!/usr/bin/env bash
# Installs the Debian packages hiercore-edge needs. Idempotent and non-interactive: safe to run on
# every deploy and in CI.
#
#   deploy/setup.sh                 runtime + test/dev packages (what CI and developers use)
#   deploy/setup.sh --runtime-only  runtime packages only (production edge boxes)
set -euo pipefail

runtime_only=0
for a in "$@"; do
  case "$a" in
    --runtime-only) runtime_only=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

# Runtime: onnxruntime-node and sharp ship their native libraries inside their npm packages.
# GStreamer (capture; the -dev packages let npm ci build gstreamer-superficial), Aravis for GigE Vision /
# USB3 Vision cameras, libsystemd for sd-notify (Type=notify + watchdog), and the toolchain node-gyp
# builds those two addons with.
runtime_pkgs=(ca-certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-tools libaravis-0.8-0 aravis-tools libsystemd-dev pkg-config make g++ python3)
# Tests: a real mosquitto broker (+ clients) for the daemon integration tests, openssl for their TLS
# certificates, Debian's PyTorch so deploy/export_backbone.py (random weights, no download) is tested, and
# Debian's Chromium, which test/web.test.ts drives (playwright-core, no browser download) to test the web page.
dev_pkgs=(mosquitto mosquitto-clients openssl iproute2 python3-torch python3-torchvision chromium)

pkgs=("${runtime_pkgs[@]}")
[ "$runtime_only" = 1 ] || pkgs+=("${dev_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup.sh: all packages present (${pkgs[*]})"
else
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup.sh: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts mosquitto as a system service on install; the tests start their own brokers.
if [ "$runtime_only" = 0 ] && command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  echo "setup.sh: note: a system mosquitto is running on port 1883 (tests use their own ports)"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || { [ "$node_major" -eq 20 ] && [ "$(node -p 'process.versions.node.split(".")[1]')" -lt 11 ]; }; then
  echo "setup.sh: Node.js >= 20.11 is required (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
echo "setup.sh: done"
