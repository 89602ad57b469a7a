#!/usr/bin/env bash
# A local Python 3.11 base image (Debian bookworm, made with debootstrap) for hosts that cannot pull
# python:3.11-slim-bookworm. Prints the image name; build with it as
#   podman build --format docker --build-arg PYTHON_IMAGE=localhost/intentserve-python-base:3.11-bookworm .
# Reuses the image when it exists (REBUILD=1 makes it again). Needs root, debootstrap and podman.
#   MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail
IMAGE=${IMAGE:-localhost/intentserve-python-base:3.11-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ -z "${REBUILD:-}" ] && podman image exists "$IMAGE"; then echo "$IMAGE"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# The host's local CA certificates (for example a TLS-inspecting proxy's), so pip inside a build reaches the index;
# PIP_CERT points pip at the system bundle instead of its own.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
  chroot "$work/rootfs" update-ca-certificates >/dev/null
fi
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
  "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/*
tar -C "$work/rootfs" -c . | podman import --quiet \
  --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "$IMAGE"
