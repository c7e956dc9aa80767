#!/usr/bin/env bash
# Build the 6.1 kernels that check mmreplay's emulated placement rules (see kernels/README.md):
#   6.1-plain               Debian's linux-source-6.1 as shipped (<= 6.6 rule)
#   6.1-align-ge-pmd        + patches 0001 0002      (6.8-6.11 rule)
#   6.1-align-pmd-multiple  + patches 0001 0002 0003 (6.12.0 rule)
# Outputs: CACHE/<name>/{bzImage,.config,release,build-info}, CACHE defaulting to
# ~/.cache/mmreplay/kernels (MMREPLAY_KERNEL_CACHE). One source tree, CACHE/src, is built in place:
# the first kernel fully, the others incrementally (only mm/ files and the release string change).
# Rerunning skips every kernel whose recipe (tarball, the patches' diffs, config fragment) is unchanged.
set -euo pipefail

usage() {
    cat <<EOF
Usage: $0 [--list] [--force] [NAME...]
Builds the named kernels (default: all, in the order below) into \$MMREPLAY_KERNEL_CACHE.
  --list   print each kernel's name, image path and whether it is built, then exit
  --force  rebuild the named kernels even if up to date (incrementally, in the same tree)
Kernels: 6.1-plain 6.1-align-ge-pmd 6.1-align-pmd-multiple
Environment: MMREPLAY_KERNEL_CACHE (default ~/.cache/mmreplay/kernels),
  MMREPLAY_KERNEL_SOURCE (default /usr/src/linux-source-6.1.tar.xz), JOBS (default nproc),
  VNG (virtme-ng's vng, default: the one on PATH). Builds run under nice -n 10.
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MMREPLAY_KERNEL_CACHE:-$HOME/.cache/mmreplay/kernels}
tarball=${MMREPLAY_KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
jobs=${JOBS:-$(nproc)}
tree=$cache/src/linux-source-6.1
applied=$tree/.mmreplay-applied   # copies of the patches applied to the tree, in order
fragment=$here/guest.config
all_names=(6.1-plain 6.1-align-ge-pmd 6.1-align-pmd-multiple)

die() { echo "Error: $*" >&2; exit 2; }
log() { echo "build.sh: $*"; }

patches_for() {
    case $1 in
    6.1-plain) ;;
    6.1-align-ge-pmd) echo "$here"/patches/000[12]-*.patch ;;
    6.1-align-pmd-multiple) echo "$here"/patches/000[123]-*.patch ;;
    *) die "unknown kernel '$1' (known: ${all_names[*]})" ;;
    esac
}

# A patch's diff, without its description (editing a description rebuilds nothing).
patch_body() { sed -n '/^--- a\//,$p' "$1"; }

# sha256 of the recipe: source tarball, config fragment and this kernel's patches, in order.
recipe_of() {
    local p
    {
        echo "tarball $tarball_sha"
        echo "fragment $(sha256sum <"$fragment" | cut -d' ' -f1)"
        for p in $(patches_for "$1"); do echo "patch $(basename "$p") $(patch_body "$p" | sha256sum | cut -d' ' -f1)"; done
    } | sha256sum | cut -d' ' -f1
}

is_built() { [[ -f $cache/$1/bzImage && -f $cache/$1/recipe.sha256 && $(cat "$cache/$1/recipe.sha256") == "$(recipe_of "$1")" ]]; }

list=0
force=0
names=()
for arg in "$@"; do
    case $arg in
    --list) list=1 ;;
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option '$arg'" ;;
    *) patches_for "$arg" >/dev/null; names+=("$arg") ;;
    esac
done
((${#names[@]})) || names=("${all_names[@]}")

[[ -r $tarball ]] || die "$tarball not found (apt-get install linux-source-6.1)"
tarball_sha=$(sha256sum <"$tarball" | cut -d' ' -f1)

if ((list)); then
    for name in "${names[@]}"; do
        if is_built "$name"; then state="built $(cat "$cache/$name/release")"; else state="not built"; fi
        echo "$name $cache/$name/bzImage ($state)"
    done
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -n 9 || die "another build.sh holds $cache/.lock"

# The source tree: unpacked once per tarball (a different tarball means a fresh tree).
unpack() {
    if [[ -f $tree/.mmreplay-tarball.sha256 && $(cat "$tree/.mmreplay-tarball.sha256") == "$tarball_sha" ]]; then
        return
    fi
    log "unpacking $tarball into $cache/src"
    rm -rf "$cache/src"
    mkdir -p "$cache/src.tmp"
    tar -C "$cache/src.tmp" -xf "$tarball"
    [[ -f $cache/src.tmp/linux-source-6.1/Makefile ]] || die "$tarball has no linux-source-6.1/Makefile"
    echo "$tarball_sha" >"$cache/src.tmp/linux-source-6.1/.mmreplay-tarball.sha256"
    mv "$cache/src.tmp" "$cache/src"
}

# virtme-ng's minimal config plus guest.config; redone only when the fragment changes.
configure() {
    local want
    want=$(sha256sum <"$fragment" | cut -d' ' -f1)
    if [[ -f $tree/.config && -f $tree/.mmreplay-config.sha256 && $(cat "$tree/.mmreplay-config.sha256") == "$want" ]]; then
        return
    fi
    local vng=${VNG:-$(command -v vng || true)}
    [[ -n $vng && -x $vng ]] || die "vng not found: pip install virtme-ng, then put its bin directory on PATH or set VNG"
    local version
    version=$("$vng" --version 2>&1 | head -1)
    log "writing virtme-ng's minimal config ($version) and merging $(basename "$fragment")"
    # vng --kconfig runs virtme-configkernel, which sits next to it.
    mkdir -p "$cache/logs"
    (cd "$tree" && PATH="$(dirname "$vng"):$PATH" "$vng" --kconfig >"$cache/logs/config.log" 2>&1) ||
        die "vng --kconfig failed; see $cache/logs/config.log"
    (cd "$tree" && scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null && make -s olddefconfig)
    check_config
    echo "vng --kconfig ($version) + $(basename "$fragment") + LOCALVERSION" >"$tree/.mmreplay-config.info"
    echo "$want" >"$tree/.mmreplay-config.sha256"
}

# Every line of the fragment must hold in the final .config (olddefconfig silently drops
# options whose dependencies are missing).
check_config() {
    local line sym bad=0
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(.*)$ ]]; then
            grep -qxF "$line" "$tree/.config" || { echo "  wanted $line, got: $(grep -E "(^|# )${BASH_REMATCH[1]}[= ]" "$tree/.config" || echo absent)"; bad=1; }
        elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
            sym=${BASH_REMATCH[1]}
            if grep -qE "^$sym=" "$tree/.config"; then echo "  wanted $sym off, got: $(grep -E "^$sym=" "$tree/.config")"; bad=1; fi
        fi
    done <"$fragment"
    ((bad == 0)) || die "the kernel config does not honour $fragment (see above)"
}

# Bring the tree to exactly the given patches: keep the longest matching prefix of what is
# applied, reverse the rest (from the saved copies), apply the missing ones.
sync_patches() {
    local want=("$@") have=() keep=0 i
    mkdir -p "$applied"
    mapfile -t have < <(find "$applied" -name '*.patch' -printf '%f\n' | sort)
    while ((keep < ${#have[@]} && keep < ${#want[@]})) &&
        cmp -s <(patch_body "$applied/${have[keep]}") <(patch_body "${want[keep]}"); do
        keep=$((keep + 1))
    done
    for ((i = ${#have[@]} - 1; i >= keep; i--)); do
        log "reverting ${have[i]#??-}"
        patch -d "$tree" -p1 -R -s --dry-run <"$applied/${have[i]}" >/dev/null || die "cannot revert ${have[i]} (tree modified by hand? delete $cache/src)"
        patch -d "$tree" -p1 -R -s <"$applied/${have[i]}"
        rm "$applied/${have[i]}"
    done
    for ((i = keep; i < ${#want[@]}; i++)); do
        log "applying $(basename "${want[i]}")"
        patch -d "$tree" -p1 -s --dry-run <"${want[i]}" >/dev/null || die "$(basename "${want[i]}") does not apply to $tree"
        patch -d "$tree" -p1 -s --no-backup-if-mismatch <"${want[i]}"
        cp "${want[i]}" "$applied/$(printf %02d "$i")-$(basename "${want[i]}")"
    done
}

# Sets children_cpu to the CPU seconds (user+sys) of this script's finished children so far,
# from bash's `times` (called directly: in a $(...) subshell it would see no children).
children_cpu_seconds() {
    times >"$cache/.times"
    children_cpu=$(tail -1 "$cache/.times" | awk '{ for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]); n += t[1] * 60 + t[2] } printf "%d\n", n }')
}

build() {
    local name=$1 out=$cache/$1 kind start secs release load cpu_start cpu
    local -a patches
    read -r -a patches <<<"$(patches_for "$name")"
    sync_patches "${patches[@]}"
    (cd "$tree" && scripts/config --set-str LOCALVERSION "-mmreplay-${name#6.1-}" && make -s olddefconfig)
    check_config
    # "incremental": the tree holds objects of an earlier build, which make reuses where it can.
    if [[ -f $tree/vmlinux ]]; then kind=incremental; else kind=full; fi
    mkdir -p "$cache/logs"
    log "building $name ($kind, make -j$jobs bzImage under nice -n 10; log: $cache/logs/$name.log)"
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    children_cpu_seconds
    cpu_start=$children_cpu
    start=$(date +%s)
    if ! nice -n 10 make -C "$tree" -j"$jobs" bzImage >"$cache/logs/$name.log" 2>&1; then
        tail -20 "$cache/logs/$name.log" >&2
        die "building $name failed; full log in $cache/logs/$name.log"
    fi
    secs=$(($(date +%s) - start))
    children_cpu_seconds
    cpu=$((children_cpu - cpu_start))
    release=$(make -s -C "$tree" kernelrelease)
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp"
    cp "$tree/arch/x86/boot/bzImage" "$out.tmp/bzImage"
    cp "$tree/.config" "$out.tmp/.config"
    echo "$release" >"$out.tmp/release"
    recipe_of "$name" >"$out.tmp/recipe.sha256"
    {
        echo "name: $name"
        echo "release: $release"
        echo "source: $tarball (sha256 $tarball_sha)"
        echo "patches: ${patches[*]:+$(for p in "${patches[@]}"; do basename "$p"; done | tr '\n' ' ')}"
        echo "config: $(cat "$tree/.mmreplay-config.info")"
        echo "build: $kind, ${secs} s wall, ${cpu} s CPU (user+sys), make -j$jobs bzImage under nice -n 10, $(nproc) CPUs, load average at start: $load"
        echo "compiler: $(gcc --version | head -1)"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$out.tmp/build-info"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    log "$name: $release in ${secs} s wall, ${cpu} s CPU ($kind) -> $out/bzImage"
}

todo=()
for name in "${names[@]}"; do
    if ((!force)) && is_built "$name"; then
        log "$name: up to date ($(cat "$cache/$name/release")) -> $cache/$name/bzImage"
    else
        todo+=("$name")
    fi
done
((${#todo[@]})) || exit 0
unpack
configure
for name in "${todo[@]}"; do build "$name"; done
