"""CaffeRNG against a plain scalar transcription of Boost's code, and FastRNG's basics.

The reference below follows boost/random (normal_distribution.hpp,
exponential_distribution.hpp, uniform_01.hpp, uniform_real_distribution.hpp,
bernoulli_distribution.hpp, detail/int_float_pair.hpp) line by line, one word and one
float32 operation at a time.  The vectorized CaffeRNG must agree with it bit for bit, and
must leave the stream exactly where it does.
"""

import math
import os
import re

import numpy as np
import pytest

import fillers.rng as R
from fillers.rng import CaffeRNG, FastRNG, make_rng

f32 = np.float32
NX, NY, EX, EY = (R._NORMAL_TABLE_X, R._NORMAL_TABLE_Y, R._EXP_TABLE_X, R._EXP_TABLE_Y)
BOOST = "/usr/include/boost/random"


# --- the scalar reference --------------------------------------------------------------

class Engine:
    """boost::mt19937 seeded like Caffe::set_random_seed, one word per call."""

    def __init__(self, seed=None, words=None):
        if words is None:
            self.bg = np.random.MT19937()
            self.bg.state = np.random.RandomState(seed).get_state(legacy=False)
        self.words = words
        self.count = 0

    def __call__(self):
        self.count += 1
        if self.words is not None:
            return int(self.words[self.count - 1])
        return int(self.bg.random_raw())


class Stats(dict):
    def __missing__(self, key):
        return 0


def int_float_pair(eng):                   # generate_int_float_pair<float, 8>, 32-bit engine
    u = eng()
    return f32(u >> 8) * f32(2.0 ** -24), u & 0xFF


def uniform01(eng, st):                    # new_uniform_01<float>
    while True:
        r = f32(eng()) * (f32(1) / (f32(4294967295.0) + f32(1)))
        if r < f32(1):
            return r
        st["y01_redraw"] += 1


def _libm_expf():
    import ctypes
    import ctypes.util
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("m")).expf
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


LIBM_EXPF = _libm_expf()


def expf(v):                               # std::exp(float) is the C library's expf
    if LIBM_EXPF is not None:
        return f32(LIBM_EXPF(float(v)))
    return f32(math.exp(float(v)))


def unit_exp(eng, st):                     # unit_exponential_distribution<float>
    shift = f32(0)
    while True:
        r, i = int_float_pair(eng)
        x = r * f32(EX[i])
        if x < f32(EX[i + 1]):
            return shift + x
        if i == 0:
            st["exp_shift"] += 1
            shift += f32(EX[1])
        else:
            st["exp_slow"] += 1
            y01 = uniform01(eng, st)
            y = f32(EY[i]) + y01 * f32(EY[i + 1] - EY[i])
            ub = f32(EX[i] - EX[i + 1]) * y01 - (f32(EX[i]) - x)
            lb = y - (f32(EY[i + 1]) + (f32(EX[i + 1]) - x) * f32(EY[i + 1]))
            if ub < 0 and (lb < 0 or y < expf(-x)):
                return x + shift


def unit_normal(eng, st):                  # unit_normal_distribution<float>
    while True:
        r, i = int_float_pair(eng)
        sign = (i & 1) * 2 - 1
        i >>= 1
        x = r * f32(NX[i])
        if x < NX[i + 1]:                  # float promoted to double
            return x * f32(sign)
        if i == 0:
            st["tail"] += 1
            tail_start = f32(NX[1])
            while True:
                a = unit_exp(eng, st) / tail_start
                b = unit_exp(eng, st) / f32(1)
                if f32(2) * b > a * a:
                    return (a + tail_start) * f32(sign)
                st["tail_retry"] += 1
        st["slow"] += 1
        y01 = uniform01(eng, st)
        y = f32(NY[i]) + y01 * f32(NY[i + 1] - NY[i])
        if NX[i] >= 1:
            ub = f32(NX[i] - NX[i + 1]) * y01 - (f32(NX[i]) - x)
            lb = y - (f32(NY[i]) + (f32(NX[i]) - x) * f32(NY[i]) * f32(NX[i]))
        else:
            lb = f32(NX[i] - NX[i + 1]) * y01 - (f32(NX[i]) - x)
            ub = y - (f32(NY[i]) + (f32(NX[i]) - x) * f32(NY[i]) * f32(NX[i]))
        if ub < 0 and (lb < 0 or y < expf(-(x * x / f32(2)))):
            return x * f32(sign)
        st["reject"] += 1


def ref_gaussian(eng, n, mu, sigma, st):
    mu, sigma = f32(mu), f32(sigma)
    return np.array([unit_normal(eng, st) * sigma + mu for _ in range(n)], dtype=f32)


def ref_uniform(eng, n, a, b):             # uniform_real<float>(a, nextafter(b)) per sample
    a, b = f32(a), f32(b)
    hi = np.nextafter(b, np.finfo(f32).max)
    lo, mult = a, f32(1)
    if hi / f32(2) - a / f32(2) > np.finfo(f32).max / f32(2):
        lo, hi, mult = a / f32(2), hi / f32(2), f32(2)
    out = []
    for _ in range(n):
        while True:
            r = f32(eng()) / (f32(4294967295.0) + f32(1)) * (hi - lo) + lo
            if r < hi:
                out.append(mult * r)
                break
    return np.array(out, dtype=f32)


def ref_bernoulli(eng, n, p):
    p = f32(p)
    if p == 0:
        return np.zeros(n, bool)
    return np.array([f32(eng()) <= p * f32(4294967295.0) for _ in range(n)], dtype=bool)


def same(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


class WordsRNG(CaffeRNG):
    """A CaffeRNG reading a given word array instead of the engine."""

    def __init__(self, words, chunk):
        super().__init__(0)
        self._src, self._at, self.chunk = words, 0, chunk

    def _raw(self, n):
        w = self._src[self._at:self._at + n]
        self._at += n
        assert w.size == n, "ran out of test words"
        return w


# --- tables and words -------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(f"{BOOST}/normal_distribution.hpp"),
                    reason="Boost headers not installed")
def test_embedded_tables_equal_boosts():
    for fname, x, y, n in (("normal_distribution.hpp", NX, NY, 129),
                           ("exponential_distribution.hpp", EX, EY, 257)):
        src = open(os.path.join(BOOST, fname)).read()
        for name, ours in (("table_x", x), ("table_y", y)):
            body = re.search(r"::%s\[%d\] = \{(.*?)\};" % (name, n), src, re.S).group(1)
            theirs = [float(t) for t in re.findall(r"[0-9][0-9.eE+-]*", body)]
            assert list(ours) == theirs, (fname, name)


@pytest.mark.parametrize("seed", [0, 1701, 2 ** 32 - 1])
def test_words_are_legacy_seeded_mt19937(seed):
    rs = np.random.RandomState(seed)
    bg = np.random.MT19937()
    bg.state = rs.get_state(legacy=False)
    expect = bg.random_raw(10000).astype(np.uint32)
    g = CaffeRNG(seed)
    got = np.concatenate([g.words(1), g.words(5000), g.words(4999)])
    assert np.array_equal(got, expect)
    assert g.consumed == 10000


def test_seed_must_be_uint32():
    with pytest.raises(ValueError):
        CaffeRNG(-1)
    with pytest.raises(ValueError):
        CaffeRNG(2 ** 32)
    with pytest.raises(TypeError):
        CaffeRNG(1.5)


# --- gaussian: vectorized == scalar --------------------------------------------------------

@pytest.mark.parametrize("seed", [1701, 42, 7])
def test_gaussian_matches_scalar_reference(seed):
    g, eng, st = CaffeRNG(seed), Engine(seed), Stats()
    # tiny calls in sequence share the stream: each must stop exactly where Boost stops
    for n, mu, sigma in [(1, 0, 1), (2, 0.5, 2), (3, -1, 0.25), (1, 0, 1), (100000, 0, 1),
                         (3, 0, 1), (2, 0, 3), (99990, 0.001, 0.02), (1, 0, 1)]:
        got = g.gaussian(n, mu, sigma)
        expect = ref_gaussian(eng, n, mu, sigma, st)
        assert same(got, expect), (seed, n)
        assert g.consumed == eng.count, (seed, n)
    assert st["tail"] > 0                  # strip-0 fast-path failures went to the tail
    assert st["slow"] > 0 and st["reject"] > 0
    # the next words are the ones Caffe would read next
    assert np.array_equal(g.words(8), np.array([eng() for _ in range(8)], np.uint32))


def _adversarial_words(seed, n):
    """Words rich in rare paths: tails, exponential shifts, y01 == 1, strip 127."""
    r = np.random.default_rng(seed)
    w = r.integers(0, 2 ** 32, n, dtype=np.uint64)
    kind = r.random(n)
    low = r.integers(0, 2 ** 24, n, dtype=np.uint64)
    tail = ((np.uint64(0xFF0000) | (low & np.uint64(0xFFFF))) << np.uint64(8)) | (low & np.uint64(1))
    near_one = np.uint64(0xFFFFFF80) | (low & np.uint64(0x7F))       # float(u) == 2^32
    strip127 = (low << np.uint64(8)) | np.uint64(254) | (low & np.uint64(1))
    exp_shift = (np.uint64(0xFFFF00) | (low & np.uint64(0xFF))) << np.uint64(8)
    w = np.where(kind < 0.15, tail, w)
    w = np.where((kind >= 0.15) & (kind < 0.25), near_one, w)
    w = np.where((kind >= 0.25) & (kind < 0.35), strip127, w)
    w = np.where((kind >= 0.35) & (kind < 0.5), exp_shift, w)
    return (w & np.uint64(0xFFFFFFFF)).astype(np.uint32)


@pytest.mark.parametrize("chunk", [3, 7, 64, 4096])
def test_gaussian_rare_paths_and_block_edges(chunk):
    words = _adversarial_words(chunk, 60000)
    g, eng, st = WordsRNG(words, chunk), Engine(words=words), Stats()
    for n in [1, 2, 3, 500, 1, 7, 4000, 2, 1200, 3]:
        got = g.gaussian(n)
        expect = ref_gaussian(eng, n, 0, 1, st)
        assert same(got, expect), (chunk, n)
        assert g.consumed == eng.count, (chunk, n)
    for path in ("tail", "tail_retry", "exp_shift", "exp_slow", "y01_redraw", "slow", "reject"):
        assert st[path] > 0, path


@pytest.mark.skipif(LIBM_EXPF is None, reason="no C library expf")
def test_between_bounds_test_uses_the_c_librarys_expf():
    # the arguments the ziggurat passes: -(x*x/2) for x in the slow strips
    v = -(np.random.default_rng(0).uniform(0, 3.5, 200000).astype(f32) ** 2 / f32(2))
    libm = np.array([LIBM_EXPF(float(a)) for a in v], f32)
    double = np.exp(v.astype(np.float64)).astype(f32)
    assert np.count_nonzero(libm != double) > 0         # the roundings do differ sometimes
    for y in (libm, np.nextafter(libm, f32(-1)), np.nextafter(libm, f32(2)), double,
              np.nextafter(double, f32(-1))):
        assert np.array_equal(R._y_below_expf(y.astype(f32), v), y < libm)


def test_gaussian_checks_sigma():
    with pytest.raises(ValueError):
        CaffeRNG(1).gaussian(3, 0, 0)
    with pytest.raises(ValueError):
        CaffeRNG(1).gaussian(3, 0, -1)


def test_gaussian_zero_samples_draw_nothing():
    g = CaffeRNG(5)
    assert g.gaussian(0).shape == (0,) and g.consumed == 0


# --- uniform and bernoulli ---------------------------------------------------------------

@pytest.mark.parametrize("a,b", [(0, 1), (-0.3, 0.3), (-2, 3), (0.1, 0.3), (5, 5),
                                 (-1e-30, 1e-30), (-3e38, 3e38), (0, 1e-40)])
def test_uniform_matches_scalar_reference(a, b):
    g, eng = CaffeRNG(1701), Engine(1701)
    for n in (1, 3, 5000):
        assert same(g.uniform(n, a, b), ref_uniform(eng, n, a, b)), (a, b, n)
        assert g.consumed == eng.count


def test_uniform_rejection_draws_replacements_in_order():
    # words just below 2^32 map to b' exactly and are drawn again
    words = np.array([5, 0xFFFFFFFF, 7, 0xFFFFFF90, 0xFFFFFF80, 1 << 31, 9, 11], np.uint32)
    g, eng = WordsRNG(words, 2), Engine(words=words)
    got = g.uniform(5, 0, 1)
    assert same(got, ref_uniform(eng, 5, 0, 1))
    assert g.consumed == eng.count == 8


@pytest.mark.parametrize("p", [0.0, 1e-9, 0.3, 4 / 13, 1.0])
def test_bernoulli_matches_scalar_reference(p):
    g, eng = CaffeRNG(3), Engine(3)
    assert np.array_equal(g.bernoulli(20000, p), ref_bernoulli(eng, 20000, p))
    assert g.consumed == eng.count == (0 if p == 0 else 20000)


def test_bernoulli_checks_p():
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            CaffeRNG(1).bernoulli(3, p)


def test_uniform_checks_bounds():
    with pytest.raises(ValueError):
        CaffeRNG(1).uniform(3, 1, 0)
    with pytest.raises(ValueError):
        CaffeRNG(1).uniform(3, 0, float("inf"))


# --- mixing calls, state -----------------------------------------------------------------

def test_mixed_sequence_and_state_round_trip():
    g, eng, st = CaffeRNG(99), Engine(99), Stats()
    g.gaussian(777)
    ref_gaussian(eng, 777, 0, 1, st)
    saved = g.get_state()
    twin = g.copy()
    a = [g.uniform(10, -1, 1), g.bernoulli(10, 0.5), g.gaussian(5), g.words(3)]
    b = [ref_uniform(eng, 10, -1, 1), ref_bernoulli(eng, 10, 0.5), ref_gaussian(eng, 5, 0, 1, st),
         np.array([eng() for _ in range(3)], np.uint32)]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    c = [twin.uniform(10, -1, 1), twin.bernoulli(10, 0.5), twin.gaussian(5), twin.words(3)]
    g.set_state(saved)
    d = [g.uniform(10, -1, 1), g.bernoulli(10, 0.5), g.gaussian(5), g.words(3)]
    for x, y, z in zip(a, c, d):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    assert g.consumed == twin.consumed == eng.count


def test_large_gaussian_spans_blocks_without_losing_words():
    g = CaffeRNG(11)
    g.chunk = 1000
    whole = g.gaussian(25000)
    g2 = CaffeRNG(11)
    parts = np.concatenate([g2.gaussian(k) for k in (1, 9999, 15000)])
    assert same(whole, parts) and g.consumed == g2.consumed


# --- FastRNG and make_rng ------------------------------------------------------------------

def test_fast_rng_reproducible_and_in_range():
    a, b = FastRNG(5), FastRNG(5)
    for s in (a, b):
        s.chunk = 1000                     # several chunks
    ua, ub = a.uniform(5000, -2, 3), b.uniform(5000, -2, 3)
    assert ua.dtype == np.float32 and np.array_equal(ua, ub)
    assert ua.min() >= -2 and ua.max() < 3
    ga, gb = a.gaussian(5000, 1, 2), b.gaussian(5000, 1, 2)
    assert ga.dtype == np.float32 and np.array_equal(ga, gb)
    assert np.array_equal(a.bernoulli(100, 0.5), b.bernoulli(100, 0.5))
    assert not FastRNG(6).uniform(10).tolist() == FastRNG(5).uniform(10).tolist()


def test_fast_rng_edges():
    s = FastRNG(1)
    assert np.all(s.uniform(10, 2, 2) == 2)
    wide = s.uniform(100000, -3e38, 3e38)
    assert np.all(np.isfinite(wide)) and wide.min() >= -3e38 and wide.max() < 3e38
    assert not s.bernoulli(1000, 0).any() and s.bernoulli(1000, 1).all()
    with pytest.raises(ValueError):
        s.gaussian(3, 0, 0)
    with pytest.raises(ValueError):
        s.uniform(3, 1, 0)


def test_make_rng():
    g = np.random.default_rng(3)
    assert isinstance(make_rng(None), FastRNG)
    assert isinstance(make_rng(7), FastRNG)
    assert make_rng(g).generator is g
    c = CaffeRNG(1)
    assert make_rng(c) is c
    f = FastRNG(1)
    assert make_rng(f, kind="caffe") is f
    assert isinstance(make_rng(7, kind="caffe"), CaffeRNG) and make_rng(7, kind="caffe").seed == 7
    with pytest.raises(ValueError):
        make_rng(g, kind="caffe")
    with pytest.raises(ValueError):
        make_rng(1, kind="mt")
    with pytest.raises(TypeError):
        make_rng("seed")
    with pytest.raises(TypeError):
        make_rng(True)
