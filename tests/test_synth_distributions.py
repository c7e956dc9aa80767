"""Size distributions: the --size grammar, stratified sampling, bounds, glibc's mmap overhead."""

from __future__ import annotations

import shutil
import statistics
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.distributions import (MAX_SIZE_BYTES, STRATUM_BLOCK, glibc_mapped_length,
                                 normal_quantile, parse_distribution, stratified_uniforms)
from traces.errors import MmreplayError
from traces.schema import MAP_ANONYMOUS, OP_CODE

KIB, MIB = 1 << 10, 1 << 20
BUNDLED = "traces/data/buffers-4632k.arrow"


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


# -- glibc: what malloc(N) really maps -----------------------------------------------------

MALLOC_PROGRAM = r"""
#include <malloc.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    /* A fixed threshold turns off glibc's dynamic one: every request >= 128 KiB is mmapped. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* Use up the heap top left by glibc's first allocation, or a 128 KiB request fits in it. */
    if (!malloc(120 * 1024)) return 1;
    for (int i = 1; i < argc; i++) {
        char *p = malloc(strtoull(argv[i], 0, 10));
        if (!p) return 1;
        p[0] = 1;
    }
    return 0;
}
"""


@pytest.mark.skipif(not (shutil.which("cc") and shutil.which("strace")), reason="needs cc and strace")
def test_glibc_mapped_length_matches_what_glibc_maps(tmp_path):
    from traces.format import column_np, op_names
    from traces.strace import import_logs

    source = tmp_path / "malloc_sizes.c"
    source.write_text(MALLOC_PROGRAM)
    binary = tmp_path / "malloc_sizes"
    subprocess.run(["cc", "-O1", "-o", str(binary), str(source)], check=True)
    requests = [128 * KIB, 128 * KIB + 1, 512 * KIB - 24, 1 * MIB, 1536 * KIB - 7,
                2 * MIB - 4096, 2 * MIB - 24, 2 * MIB - 23, 2 * MIB, 4632 * KIB, 128 * MIB]
    log = tmp_path / "malloc.log"
    subprocess.run(["strace", "-f", "-e", "trace=mmap", "-o", str(log), str(binary),
                    *map(str, requests)], check=True)
    table = import_logs([log]).table
    anon = (op_names(table) == OP_CODE["mmap"]) & ((column_np(table, "flags") & MAP_ANONYMOUS) > 0)
    mapped = column_np(table, "length")[anon][-len(requests):]
    assert mapped.tolist() == glibc_mapped_length(np.array(requests)).tolist()
    # The figures the issue and the presets quote.
    assert glibc_mapped_length(np.array([128 * MIB]))[0] == 128 * MIB + 4 * KIB
    assert glibc_mapped_length(np.array([2 * MIB - 24, 2 * MIB - 23])).tolist() == \
        [2 * MIB, 2 * MIB + 4 * KIB]


@given(st.integers(1, 1 << 40))
def test_glibc_overhead_is_16_to_31_bytes_then_page_rounding(request_bytes):
    mapped = int(glibc_mapped_length(np.array([request_bytes]))[0])
    assert mapped % 4096 == 0
    assert request_bytes + 16 <= mapped < request_bytes + 31 + 4096


# -- the grammar ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical, low, high", [
    ("uniform:512K,1536K", "uniform:512K,1536K", 512 * KIB, 1536 * KIB),
    ("uniform: 524288 , 1.5M", "uniform:512K,1536K", 512 * KIB, 1536 * KIB),
    ("const:4632K", "const:4632K", 4632 * KIB, 4632 * KIB),
    ("choice:4632K,1M@3,1", "choice:4632K,1M@3,1", 1 * MIB, 4632 * KIB),
    ("choice:4K,8K,2M", "choice:4K,8K,2M", 4 * KIB, 2 * MIB),
    ("choice:4K,8K@0,1", "choice:4K,8K@0,1", 8 * KIB, 8 * KIB),
    ("lognormal:1M,0.5", "lognormal:1M,0.5,1,16384G", 1, MAX_SIZE_BYTES),
    ("lognormal:1M,0.5,4K,64M", "lognormal:1M,0.5,4K,64M", 4 * KIB, 64 * MIB),
    ("quantiles:4K,64K,1M", "quantiles:4K,64K,1M", 4 * KIB, 1 * MIB),
    ("empirical:" + BUNDLED, "empirical:" + BUNDLED, 4632 * KIB, 4632 * KIB),
])
def test_each_kind_parses_to_its_canonical_form_and_bounds(text, canonical, low, high):
    dist = parse_distribution(text)
    assert (dist.text, dist.low, dist.high) == (canonical, low, high)
    assert parse_distribution(dist.text).text == canonical  # canonical text is a fixed point


@pytest.mark.parametrize("text, message", [
    ("gamma:1M,2", "unknown size distribution 'gamma'"),
    ("512K", "unknown size distribution '512K'"),
    ("uniform:512K", "uniform takes LOW,HIGH"),
    ("uniform:", "uniform needs arguments"),
    ("uniform:-4K,1M", "size -4K in --size uniform:-4K,1M is negative"),
    ("const:0", "size 0 in --size const:0 is zero"),
    ("const:-1", "is negative"),
    ("uniform:2M,1M", "low 2M is above high 1M"),
    ("lognormal:1M,0.5,8M,4M", "min 8M is above max 4M"),
    ("lognormal:1M,-1", "sigma -1 is negative"),
    ("lognormal:1M,abc", "'abc' is not a number"),
    ("lognormal:1M,0.01,1G,2G", "holds almost none of this lognormal"),
    ("choice:1M,2M@1", "2 sizes but 1 weights"),
    ("choice:1M,2M@0,0", "weights must be >= 0 with a positive sum"),
    ("quantiles:1M", "at least two values"),
    ("quantiles:2M,1M", "must not decrease"),
    ("const:17T", "above the 16T limit"),
    ("const:12Q", "bad size '12Q'"),
    ("empirical:/nonexistent.arrow", "no such file"),
])
def test_bad_distributions_are_one_clear_line(text, message):
    with pytest.raises(MmreplayError) as error:
        parse_distribution(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_empirical_needs_anonymous_mmaps(tmp_path):
    from traces import build_table, new_metadata, write_trace

    path = tmp_path / "files-only.arrow"
    table = build_table({"ts_ns": [0], "tid": [1], "op": ["mmap"], "addr": [1 << 30],
                         "length": [8192], "prot": [1], "flags": [2], "fd": [3], "errno": [0]})
    write_trace(table, path, new_metadata("test"))
    with pytest.raises(MmreplayError, match="no successful anonymous mmaps to resample"):
        parse_distribution(f"empirical:{path}")


def test_empirical_path_is_relative_to_the_spec_folder():
    dist = parse_distribution("empirical:data/buffers-4632k.arrow", base_dir="traces")
    assert dist.text == "empirical:traces/data/buffers-4632k.arrow"
    assert set(dist.sample(rng(), 50).tolist()) == {4632 * KIB}


# -- sampling ------------------------------------------------------------------------------

@given(st.integers(1, 3 * STRATUM_BLOCK // 2), st.integers(0, 2**32))
@settings(max_examples=25, deadline=None)
def test_stratified_uniforms_put_one_draw_in_each_slice_of_each_block(n, seed):
    u = stratified_uniforms(rng(seed), n)
    assert u.shape == (n,) and (u >= 0).all() and (u < 1).all()
    for start in range(0, n, STRATUM_BLOCK):
        block = u[start:start + STRATUM_BLOCK]
        slots = np.sort(np.floor(block * len(block)).astype(np.int64))
        assert slots.tolist() == list(range(len(block)))


@given(st.floats(1e-12, 1 - 1e-12))
def test_normal_quantile_matches_the_standard_library(p):
    expected = statistics.NormalDist().inv_cdf(p)
    assert normal_quantile(np.array([p]))[0] == pytest.approx(expected, rel=1e-8, abs=1e-8)


distributions = st.one_of(
    st.builds(lambda a, d: f"uniform:{a},{a + d}", st.integers(1, 1 << 30), st.integers(0, 1 << 30)),
    st.builds(lambda s: f"const:{s}", st.integers(1, 1 << 34)),
    st.builds(lambda v, w: f"choice:{','.join(map(str, v))}@{','.join(map(str, w[:len(v)]))}",
              st.lists(st.integers(1, 1 << 32), min_size=1, max_size=6),
              st.lists(st.integers(1, 9), min_size=6, max_size=6)),
    st.builds(lambda m, s, lo, span: f"lognormal:{m},{s},{lo},{lo + span}",
              st.integers(4096, 1 << 30), st.floats(0.01, 3), st.integers(1, 1 << 20),
              st.integers(1 << 22, 1 << 34)),
    st.builds(lambda q: "quantiles:" + ",".join(map(str, sorted(q))),
              st.lists(st.integers(1, 1 << 36), min_size=2, max_size=20)),
)


def _feasible(text: str) -> str | None:
    try:
        return parse_distribution(text).text
    except MmreplayError:
        return None


@given(distributions.map(_feasible).filter(bool), st.integers(1, 3000), st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_samples_stay_within_the_distributions_bounds(text, n, seed):
    dist = parse_distribution(text)
    sizes = dist.sample(rng(seed), n)
    assert sizes.dtype == np.int64 and len(sizes) == n
    assert sizes.min() >= dist.low and sizes.max() <= dist.high
    assert (dist.sample(rng(seed), n) == sizes).all()  # same seed, same sizes


@given(st.integers(1, 1 << 30), st.integers(0, 1 << 20), st.integers(1, 5000), st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_stratified_uniform_sizes_follow_the_cdf_within_one_over_n(low, span, n, seed):
    sizes = parse_distribution(f"uniform:{low},{low + span}").sample(rng(seed), n)
    values = np.unique(sizes)
    ecdf = np.searchsorted(np.sort(sizes), values, side="right") / n
    cdf = (values - low + 1) / (span + 1)
    assert np.abs(ecdf - cdf).max() <= 1 / n + 1e-12


def test_choice_counts_are_within_one_of_their_weights():
    sizes = parse_distribution("choice:4K,1M,3M,7M@5,3,1,0.5").sample(rng(7), 9500)
    counts = {v: int((sizes == v).sum()) for v in (4 * KIB, 1 * MIB, 3 * MIB, 7 * MIB)}
    expected = {4 * KIB: 5000, 1 * MIB: 3000, 3 * MIB: 1000, 7 * MIB: 500}
    assert all(abs(counts[v] - expected[v]) < 2 for v in expected), counts


def test_lognormal_has_its_median_and_bounds():
    sizes = parse_distribution("lognormal:1M,0.7").sample(rng(3), 20001)
    assert abs((sizes < MIB).mean() - 0.5) < 1e-3
    truncated = parse_distribution("lognormal:1M,2,512K,1536K").sample(rng(3), 5000)
    assert truncated.min() >= 512 * KIB and truncated.max() <= 1536 * KIB


def test_quantiles_interpolate_in_whole_pages_between_page_sized_quantiles():
    sizes = parse_distribution("quantiles:4K,64K,1M,1M,8M").sample(rng(1), 4000)
    assert (sizes % 4096 == 0).all()
    # One quarter of the mass between each pair; the flat [1M, 1M] quarter is an atom.
    assert abs((sizes == MIB).mean() - 0.25) < 2 / 4000
    assert abs((sizes < 64 * KIB).mean() - 0.25) < 2 / 4000
