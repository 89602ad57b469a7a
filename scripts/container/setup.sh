#!/usr/bin/env bash
# Make podman usable for image builds and the container test on a Debian host without Docker.
#   - installs podman, buildah, runc and debootstrap when one is missing (as root, with apt-get);
#   - when the host has no /etc/containers/containers.conf, writes one that runs containers with runc and
#     cgroupfs (crun refuses hosts with mixed cgroup hierarchies) and with ulimits the host allows (podman's
#     defaults can exceed the host's hard nofile limit, and then every container fails to start).
# Exit status 3: no container tooling and no way to install it here.
set -euo pipefail
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman buildah runc debootstrap uidmap >/dev/null
  else
    echo "missing ${missing[*]}: install podman, buildah, runc and debootstrap (root and apt-get are needed here)" >&2
    exit 3
  fi
fi
conf=/etc/containers/containers.conf
if [ "$(id -u)" = 0 ] && [ ! -e "$conf" ]; then
  cap() { local v; v=$1; if [ "$v" = unlimited ] || [ "$v" -gt 65536 ]; then v=65536; fi; echo "$v"; }
  nofile=$(cap "$(ulimit -Hn)")
  nproc=$(cap "$(ulimit -Hu)")
  mkdir -p /etc/containers
  cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  echo "wrote $conf (runc, cgroupfs, nofile $nofile, nproc $nproc)"
fi
