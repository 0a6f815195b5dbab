#!/usr/bin/env bash
# The Debian/Ubuntu packages medroute needs on a host, checked (and, as root, installed) before `make`
# installs the Python side. `run`: Java and Maven for the local Kafka broker (deploy/kafka), python3-venv.
# `test` adds the independent peers and the browser the tests use. Not root: prints the command and fails.
set -euo pipefail

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if [ "${1:-run}" = test ]; then
  command -v storescu >/dev/null || need+=(dcmtk)  # DICOM peers for the integration tests
  command -v Orthanc >/dev/null || need+=(orthanc)  # the PACS the forwarding tests deliver to
  # The privacy test traces every connect() (strace) inside a loopback-only namespace (unshare, ip).
  command -v strace >/dev/null || need+=(strace)
  command -v ip >/dev/null || need+=(iproute2)
  command -v openssl >/dev/null || need+=(openssl)  # the MLLP TLS test's client
  command -v systemd-analyze >/dev/null || need+=(systemd)  # `systemd-analyze verify` of deploy/systemd
  # The web UI's browser tests: Debian's Chromium and its driver, and a CJK font for Chinese text.
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  fc-list 2>/dev/null | grep -qi "wenquanyi micro hei" || need+=(fonts-wqy-microhei)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "medroute needs: ${need[*]}" >&2
  echo "install them with:  sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
