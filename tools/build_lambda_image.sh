#!/usr/bin/env bash
# Build a stand-in for public.ecr.aws/lambda/python:3.13 from Debian packages, for machines that can
# reach no image registry: Debian trixie (its python3 is 3.13) with awslambdaric and boto3 in
# /var/runtime, and a bootstrap that runs the handler. `sam local` adds its own runtime interface
# emulator on top when given `--invoke-image IMAGE --skip-pull-image`.
#
# Usage: tools/build_lambda_image.sh [IMAGE] [x86_64|arm64]   (as root; needs debootstrap and docker)
set -euo pipefail

image=${1:-local/lambda-python3.13}
arch=${2:-x86_64}
case "$arch" in
  x86_64) debian_arch=amd64 ;;
  arm64) debian_arch=arm64; echo "building an arm64 image needs qemu-user-static and binfmt" >&2 ;;
  *) echo "error: architecture must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "error: debootstrap missing (apt-get install -y debootstrap)" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d /tmp/lambda-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "==> debootstrap Debian trixie ($debian_arch) into $rootfs"
debootstrap --variant=minbase --arch="$debian_arch" --include=python3,ca-certificates \
  trixie "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

echo "==> awslambdaric and boto3 into /var/runtime"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile \
  --target "$rootfs/var/runtime" --platform "manylinux2014_$arch" --python-version 3.13 \
  --implementation cp --only-binary=:all: -r "$here/local/lambda_image/requirements.txt"

cat >"$rootfs/var/runtime/bootstrap" <<'BOOTSTRAP'
#!/bin/sh
# As the Lambda python runtime: the function, then its layers, then the runtime's own packages.
export PYTHONPATH=/var/task:/opt/python:/var/runtime
cd /var/task
exec python3 -m awslambdaric "$_HANDLER"
BOOTSTRAP
chmod +x "$rootfs/var/runtime/bootstrap"
rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*

echo "==> docker import $image"
tar -C "$rootfs" -c . | docker import --platform "linux/$debian_arch" \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'WORKDIR /var/task' --change 'ENTRYPOINT ["/var/runtime/bootstrap"]' - "$image" >/dev/null
echo "built $image"
