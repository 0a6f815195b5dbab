#!/usr/bin/env bash
# Creates deploy/secrets/ for compose.yaml once: the blob store's AES-256 key, the log salt and the web
# admin's password, random, readable only by the containers' user (uid 10001). Existing files are kept.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
new() { [ -e "secrets/$1" ] || { "${@:2}" > "secrets/$1"; echo "created secrets/$1"; }; }
new blob.key openssl rand -hex 32
new log.salt openssl rand -hex 32
new web-admin-password openssl rand -base64 18
if [ "$(id -u)" -eq 0 ]; then chown -R 10001:10001 secrets; else echo "as root: chown -R 10001:10001 secrets"; fi
echo "admin password: secrets/web-admin-password"
