#!/usr/bin/env bash
# Regenerates every figure of docs/findings.md, in docs/findings-data/ (about an hour on a
# 2-core machine shared with other jobs). Run from the repository root with mmreplay installed:
#
#     bash docs/findings-data/regenerate.sh
#
# Each command below is the one docs/findings.md quotes; its text output goes to NAME.txt and,
# for replays, the full result (every run, host, kernel, THP settings, command) to NAME.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/findings-data
TORCH=traces/data/bert-torch.arrow
ORT=traces/data/bert-onnxruntime.arrow
POLICIES=no-align,align-ge-pmd,align-pmd-multiple,kernel
run() {  # run NAME COMMAND...: the command's stdout in NAME.txt, with the load average at start
    local name=$1; shift
    echo "+ $*" >&2
    { echo "\$ $*"; echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"; "$@"; } \
        > "$OUT/$name.txt"
}

# What the traces contain, and what their mappings are.
run info-bert-torch mmreplay info "$TORCH"
run info-bert-onnxruntime mmreplay info "$ORT"
run anatomy python docs/findings-data/anatomy.py "$TORCH" "$ORT"

# CPython's own mmaps, seen directly (the same Python 3.11 as the recordings): 1 MiB arenas of
# its object allocator, gone with PYTHONMALLOC=malloc (pymalloc off), and 16 KiB frame data-stack
# chunks, which CPython maps through its arena allocator whatever PYTHONMALLOC says.
cpython() {
    local log
    log=$(mktemp)
    strace -f -qq -e trace=mmap,munmap -o "$log" env "$@" python3.11 -c '
def depth(n):
    return n and depth(n - 1)
objects = [object() for _ in range(10**6)]
for _ in range(200):
    depth(400)'
    echo "mmap(NULL, 1048576, ...) calls: $(grep -c 'mmap(NULL, 1048576, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)' "$log")"
    echo "mmap(NULL, 16384, ...) calls:   $(grep -c 'mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)' "$log")"
    rm -f "$log"
}
{
    echo "\$ python3.11 under strace: 10**6 objects, then 200 calls 400 frames deep"
    python3.11 --version
    cpython PYTHONMALLOC=pymalloc
    echo "\$ the same with PYTHONMALLOC=malloc (pymalloc off)"
    cpython PYTHONMALLOC=malloc
} > "$OUT/cpython-mmaps.txt"

# Issue 19's before/after: the commands of before-3d76984/README.md, on the fixed replay.
cc -O2 -o "$OUT/advised_write" tests/data/c/advised_write.c
run advised-record mmreplay record -o "$OUT/advised.arrow" -- "$OUT/advised_write"
run advised-replay mmreplay replay "$OUT/advised.arrow" -o "$OUT/advised-replay.json"
rm -f "$OUT/advised_write" "$OUT/advised.arrow"
for t in bert-torch bert-onnxruntime; do
    for thp in as-recorded never; do
        run "$t-$thp" mmreplay replay "traces/data/$t.arrow" --thp "$thp" --repeat 3 \
            -o "$OUT/$t-$thp.json"
    done
done

# The four placement rules under enabled=always emulated, with the collapse ceiling of each
# layout (MADV_COLLAPSE of every live mapping at the peak, measured apart).
for t in bert-torch bert-onnxruntime; do
    run "$t-always" mmreplay compare "traces/data/$t.arrow" --policies "$POLICIES" \
        --thp always --collapse madvise --repeat 3 -o "$OUT/$t-always.json"
done
run stacks python docs/findings-data/stacks.py "$TORCH" "$ORT"
mmreplay synth --preset cactusbssn -o "$OUT/cactus.arrow" > /dev/null
run cactus-collapse mmreplay compare "$OUT/cactus.arrow" \
    --policies no-align,align-ge-pmd,align-pmd-multiple --thp always --collapse madvise \
    --repeat 3 -o "$OUT/cactus-collapse.json"

# Aliasing: many same-sized arrays read in lockstep, and the BERT trace read the same way.
run cactus-lockstep mmreplay compare "$OUT/cactus.arrow" \
    --policies no-align,align-ge-pmd,align-pmd-multiple --thp always --access lockstep:2 \
    --repeat 3 -o "$OUT/cactus-lockstep.json"
run bert-torch-lockstep mmreplay compare "$TORCH" --policies no-align,align-ge-pmd \
    --thp always --access lockstep:1 --repeat 3 -o "$OUT/bert-torch-lockstep.json"
rm -f "$OUT/cactus.arrow"
