#!/bin/sh
# The cloud server in one step, on a fresh Debian 12 or 13, as root (make install-server runs it):
# packages (mosquitto, python3-venv, caddy), the vend-cloud user, the venv from the wheel, the settings
# file, the units, Mosquitto's link to the broker files the cloud writes, and Caddy in front with HTTPS.
# Running it again keeps /etc/vend-cloud/env and updates the rest.
#
#   deploy/install-server.sh --domain vend.example.com --email admin@example.com WHEEL
#       [--machine-broker mqtt.example.com] [--db postgresql+psycopg://...] [--no-packages]
#
# DESTDIR=/some/root writes everything under that root instead (no packages, nothing started; the units are
# enabled with systemctl --root): for building an image, and for the tests.
set -eu

usage() { echo "usage: $0 --domain DOMAIN --email ADDRESS [--machine-broker HOST] [--db URL] [--no-packages] WHEEL" >&2
          exit 2; }
die() { echo "install-server: $*" >&2; exit 1; }
step() { echo "install-server: $*"; }

here=$(cd "$(dirname "$0")/.." && pwd)
domain="" email="" machine_broker="" db="" packages=yes wheel=""
while [ $# -gt 0 ]; do
    case "$1" in
        --domain) domain=${2:-}; shift 2 ;;
        --email) email=${2:-}; shift 2 ;;
        --machine-broker) machine_broker=${2:-}; shift 2 ;;
        --db) db=${2:-}; shift 2 ;;
        --no-packages) packages=no; shift ;;
        -h|--help) usage ;;
        -*) echo "install-server: unknown option $1" >&2; usage ;;
        *) [ -z "$wheel" ] || usage; wheel=$1; shift ;;
    esac
done
root=${DESTDIR:-}
[ -n "$root" ] && packages=no

# Everything is checked before anything is changed.
[ "$(id -u)" = 0 ] || die "run it as root (sudo make install-server ...)"
[ -n "$domain" ] || die "--domain is needed: the name customers' phones and the payment platforms reach the cloud at"
echo "$domain" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$' && echo "$domain" | grep -q '\.' \
    || die "--domain $domain: give a DNS name such as vend.example.com (Caddy gets its certificate for it)"
echo "$email" | grep -Eq '^[^@ ]+@[^@ ]+\.[^@ ]+$' \
    || die "--email '$email': give the address the certificate authority writes to about the certificate"
[ -n "$machine_broker" ] || machine_broker=$domain
echo "$machine_broker" | grep -Eq '^[A-Za-z0-9.-]+$' || die "--machine-broker $machine_broker: give a host name"
case "$db" in ""|postgresql+psycopg://*|sqlite:///*) ;; *) die "--db $db: give postgresql+psycopg://USER:PASSWORD@HOST/DB" ;; esac
[ -n "$wheel" ] || usage
[ -f "$wheel" ] || die "no wheel $wheel (make install-server builds it: pip wheel --no-deps -w dist .)"
case "$wheel" in *.whl) ;; *) die "$wheel is not a wheel (.whl)" ;; esac
if [ -z "$root" ] && [ -r /etc/os-release ]; then
    . /etc/os-release
    case "${ID:-}:${VERSION_ID:-}" in
        debian:12|debian:13) ;;
        *) step "warning: made for Debian 12 and 13; this is ${PRETTY_NAME:-unknown}" ;;
    esac
fi

if [ "$packages" = yes ]; then
    step "packages: mosquitto, python3-venv, caddy"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends mosquitto python3-venv caddy
fi
for group in mosquitto caddy; do
    grep -q "^$group:" "$root/etc/group" || die "no group $group in $root/etc/group: is the $group package installed?"
done

step "the vend-cloud user"
if ! grep -q '^vend-cloud:' "$root/etc/passwd"; then
    useradd ${root:+--prefix "$root"} --system --user-group --home-dir /var/lib/vend-cloud \
        --shell /usr/sbin/nologin vend-cloud
fi

step "the cloud, from $(basename "$wheel"), into /opt/vend-cloud"
python3 -m venv "$root/opt/vend-cloud"
# The wheel itself always replaced (its version may not change between builds), then what it needs.
"$root/opt/vend-cloud/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
"$root/opt/vend-cloud/bin/pip" install --quiet "$wheel[cloud,postgres]"

step "settings: /etc/vend-cloud/env"
install -d -m 0755 "$root/etc/vend-cloud"
if [ -e "$root/etc/vend-cloud/env" ]; then
    step "  kept: $root/etc/vend-cloud/env exists (edit it by hand; this run changes nothing in it)"
else
    umask 077
    {
        echo "# vend-cloud's settings (vend-cloud --help lists them all), read by vend-cloud.service."
        echo "# Written by deploy/install-server.sh; kept when it runs again."
        echo "VEND_PUBLIC_URL=https://$domain"
        echo "# Caddy, on this host, is the only proxy whose X-Forwarded-For is believed."
        echo "VEND_TRUSTED_PROXY=127.0.0.1"
        echo "VEND_MACHINE_BROKER=$machine_broker"
        if [ -n "$db" ]; then echo "VEND_DB=$db"; else echo "# VEND_DB=postgresql+psycopg://vend:PASSWORD@localhost/vend"; fi
    } > "$root/etc/vend-cloud/env"
    umask 022
    chmod 0600 "$root/etc/vend-cloud/env"
fi

step "units: vend-cloud.service, vend-broker-reload.path (and vend-cloud-web.service, not enabled)"
install -d -m 0755 "$root/etc/systemd/system"
for unit in vend-cloud.service vend-cloud-web.service vend-broker-reload.path vend-broker-reload.service; do
    install -m 0644 "$here/systemd/$unit" "$root/etc/systemd/system/$unit"
done

step "Mosquitto: the broker files vend-cloud writes, linked into its configuration"
install -d -m 0755 "$root/etc/mosquitto/conf.d"
install -d -o "$(grep '^vend-cloud:' "$root/etc/passwd" | cut -d: -f3)" \
    -g "$(grep '^mosquitto:' "$root/etc/group" | cut -d: -f3)" -m 2750 "$root/var/lib/vend-broker"
ln -sfn /var/lib/vend-broker/mosquitto.conf "$root/etc/mosquitto/conf.d/vend.conf"

step "Caddy: HTTPS for $domain in front of vend-cloud"
install -d -m 0755 "$root/etc/caddy"
if [ -e "$root/etc/caddy/Caddyfile" ] && ! grep -q "vending fleet cloud" "$root/etc/caddy/Caddyfile"; then
    cp -p "$root/etc/caddy/Caddyfile" "$root/etc/caddy/Caddyfile.before-vend"
    step "  the Caddyfile that was there is kept as Caddyfile.before-vend"
fi
sed -e "s/vend\.example\.com/$domain/g" -e "s/admin@example\.com/$email/g" "$here/deploy/Caddyfile" \
    > "$root/etc/caddy/Caddyfile.new"
if command -v caddy >/dev/null; then
    caddy validate --adapter caddyfile --config "$root/etc/caddy/Caddyfile.new" >/dev/null 2>&1 \
        || { caddy validate --adapter caddyfile --config "$root/etc/caddy/Caddyfile.new"; die "Caddy refused the configuration"; }
fi
mv "$root/etc/caddy/Caddyfile.new" "$root/etc/caddy/Caddyfile"

if [ -n "$root" ]; then
    systemctl --root="$root" enable vend-cloud.service vend-broker-reload.path
    step "done under $root (nothing started)"
    exit 0
fi
systemctl daemon-reload
systemctl enable --now vend-cloud.service vend-broker-reload.path
step "waiting for vend-cloud to write the broker's files"
n=0
until [ -e /var/lib/vend-broker/mosquitto.conf ]; do
    n=$((n + 1)); [ $n -lt 60 ] || die "vend-cloud wrote no /var/lib/vend-broker/mosquitto.conf in 60 s: journalctl -u vend-cloud"
    sleep 1
done
systemctl restart mosquitto
systemctl enable caddy
systemctl reload-or-restart caddy
step "done: https://$domain/ (the administrator's token is in /var/lib/vend-cloud/admin-token)"
