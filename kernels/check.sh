#!/usr/bin/env bash
# Run check_alignment.c on the host and inside real kernels booted with virtme-ng, to check that
# each kernel places anonymous mmaps as the upstream rule it claims says (kernels/README.md).
#   kernels/check.sh                 host, Debian's /boot/vmlinuz-6.1.*, and the three built kernels
#   kernels/check.sh IMAGE...        host and these images (bzImage/vmlinuz files)
# Guests boot under TCG (--disable-kvm: KVM guests hang on these machines; set VNG_ACCEL=kvm to
# try KVM elsewhere). Outputs go to stdout and to CACHE/check/<image name>.txt (host: host-<x.y>.txt);
# kernels/outputs/ keeps the ones kernels/README.md shows, which tests/test_kernel_check.py checks.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MMREPLAY_KERNEL_CACHE:-$HOME/.cache/mmreplay/kernels}
vng=${VNG:-$(command -v vng || true)}
[[ -n $vng && -x $vng ]] || { echo "Error: vng not found: pip install virtme-ng, or set VNG" >&2; exit 2; }
accel=(--disable-kvm)
[[ ${VNG_ACCEL:-tcg} == kvm ]] && accel=()

if (($#)); then
    images=("$@")
else
    images=(/boot/vmlinuz-6.1.*-amd64 "$cache"/6.1-plain/bzImage "$cache"/6.1-align-ge-pmd/bzImage "$cache"/6.1-align-pmd-multiple/bzImage)
fi

# Static, so the same binary runs whatever the guest's userspace; outside /tmp, which the
# guest replaces with its own tmpfs.
mkdir -p "$cache/bin" "$cache/check"
bin=$cache/bin/check_alignment
gcc -O2 -Wall -static -o "$bin.tmp" "$here/check_alignment.c"
mv "$bin.tmp" "$bin"

host=host-$(uname -r | cut -d. -f1-2)
echo "== $host ($(uname -r))"
"$bin" | tee "$cache/check/$host.txt"

for image in "${images[@]}"; do
    [[ -f $image ]] || { echo "Error: $image not found (kernels/build.sh builds the 6.1 images)" >&2; exit 2; }
    case $image in
    */bzImage) name=$(basename "$(dirname "$image")") ;;
    *) name=$(basename "$image") ;;
    esac
    echo "== $name ($image, vng ${accel[*]:-(kvm)})"
    start=$(date +%s.%N)
    # /proc/uptime first: the guest kernel's own boot time, apart from QEMU's start and teardown.
    PATH="$(dirname "$vng"):$PATH" "$vng" --run "$image" --user root "${accel[@]}" --memory 1G --cpus 1 \
        -- "echo guest_uptime_at_command_s: \$(cut -d' ' -f1 /proc/uptime); $bin" >"$cache/check/$name.txt.tmp" 2>&1 || {
        rc=$?; cat "$cache/check/$name.txt.tmp"; echo "Error: vng --run $image exited with status $rc" >&2; exit 1; }
    end=$(date +%s.%N)
    printf 'vng_wall_s: %.1f (QEMU start, kernel boot, the command, shutdown)\n' "$(echo "$end - $start" | bc)" >>"$cache/check/$name.txt.tmp"
    mv "$cache/check/$name.txt.tmp" "$cache/check/$name.txt"
    cat "$cache/check/$name.txt"
done
