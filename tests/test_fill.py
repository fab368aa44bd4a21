"""The fillers: bit-exact against real Caffe's fills, Caffe's CHECKs, and statistics.

The golden fills in ../shared/golden/fills were written by BVLC Caffe (master
9b891540): ``caffe.set_random_seed(seed)`` then ``caffe.Net(prototxt, TEST)``, which fills
layer by layer in net order, each layer's weight filler then its bias filler, from one
stream.  Here the nets are walked by hand (layer lists written out below) with one
CaffeRNG, and every array must be byte-identical.
"""

import doctest
import math
import os
import sys
import types

import numpy as np
import pytest

import conftest

from fillers.fans import FillerError, fan_in_fan_out, variance_norm_n
from fillers.init import (FILLERS, bilinear, constant, fill, filler_params, gaussian, msra,
                          positive_unitball, uniform, variance_scaling, xavier)
from fillers.rng import CaffeRNG, FastRNG

FILL_MODULE = sys.modules["fillers.init"]
GOLDEN = str(conftest.GOLDEN / "fills")
f32 = np.float32


def golden(name):
    path = os.path.join(GOLDEN, name + ".npz")
    if not os.path.exists(path):
        pytest.skip(f"golden file {path} not available")
    return np.load(path)


def byte_equal(a, b):
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and \
        np.array_equal(a.view(np.uint32), b.view(np.uint32))


# --- fillers_zoo.prototxt, by hand ----------------------------------------------------------

def C(value=0.0):
    return {"type": "constant", "value": value}


# (layer, [filler of blob 0, blob 1, ...]) in net order; None: set to zero without drawing
ZOO = [
    ("conv_xavier_in", [{"type": "xavier"}, {"type": "xavier"}]),
    ("conv_xavier_out", [{"type": "xavier", "variance_norm": 1}, {"type": "msra"}]),
    ("conv_xavier_avg", [{"type": "xavier", "variance_norm": 2}, C()]),
    ("conv_msra_in", [{"type": "msra"}, {"type": "gaussian", "std": 0.5, "mean": -1}]),
    ("conv_msra_out", [{"type": "msra", "variance_norm": 1}, {"type": "uniform", "min": -2, "max": 3}]),
    ("conv_msra_avg", [{"type": "msra", "variance_norm": 2}, C(0.7)]),
    ("conv_default", [C(), C()]),
    ("deconv_bilinear2", [{"type": "bilinear"}]),
    ("deconv_bilinear3", [{"type": "bilinear"}]),
    ("deconv_bilinear4", [{"type": "bilinear"}]),
    ("deconv_bilinear5", [{"type": "bilinear"}]),
    ("deconv_msra", [{"type": "msra"}, C(-0.1)]),
    ("ip_gauss", [{"type": "gaussian", "std": 0.02, "mean": 0.001}, C(1)]),
    ("ip_sparse", [{"type": "gaussian", "std": 0.3, "sparse": 4}, C()]),
    ("ip_unitball", [{"type": "positive_unitball"}, {"type": "positive_unitball"}]),
    ("ip_uniform_t", [{"type": "uniform", "min": -0.3, "max": 0.3},
                      {"type": "xavier", "variance_norm": "AVERAGE"}]),
    ("ip_xavier_t", [{"type": "xavier"}, {"type": "msra", "variance_norm": "FAN_OUT"}]),
    ("prelu_default", [C(0.25)]),                                   # PReLU's default filler
    ("prelu_filled", [{"type": "uniform", "min": 0.1, "max": 0.3}]),
    ("scale_default", [C(1), C(0)]),                                # Scale: 1, bias 0
    ("scale_filled", [{"type": "gaussian", "std": 0.1, "mean": 1}, {"type": "msra"}]),
    ("bias_filled", [{"type": "xavier"}]),
    ("bn", [None, None, None]),                                     # BatchNorm: no draws
    ("embed", [{"type": "xavier"}, {"type": "gaussian", "std": 0.2}]),
]


def walk(layers, ref, seed):
    """Fill ``layers`` in order from one CaffeRNG; shapes from the golden arrays."""
    rng = CaffeRNG(seed)
    done = {}
    for layer, blob_fillers in layers:
        for j, spec in enumerate(blob_fillers):
            key = f"{layer}/{j}"
            shape = ref[key].shape
            done[key] = np.zeros(shape, f32) if spec is None else fill(shape, spec, rng=rng)
    return done


@pytest.mark.parametrize("name,seed", [("fillers_zoo", 1701), ("fillers_zoo.seed42", 42)])
def test_fillers_zoo_byte_equal_to_caffe(name, seed):
    ref = golden(name)
    ours = walk(ZOO, ref, seed)
    assert sorted(ours) == sorted(ref.files)                  # every golden key is covered
    bad = [k for k in ref.files if not byte_equal(ours[k], ref[k])]
    assert not bad, f"{len(bad)} of {len(ref.files)} arrays differ: {bad}"


XAVIER = {"type": "xavier"}
OTHER_NETS = {
    "BVLC__caffe__examples__mnist__lenet":
        [(n, [XAVIER, C()]) for n in ("conv1", "conv2", "ip1", "ip2")],
    "BVLC__caffe__examples__net_surgery__conv":
        [("conv", [{"type": "gaussian", "std": 0.01}, C()])],
    "kpzhang93__MTCNN_face_detection_alignment__code__codes__MTCNNv1__model__det1":
        [("conv1", [XAVIER, C()]), ("PReLU1", [C(0.25)]), ("conv2", [XAVIER, C()]),
         ("PReLU2", [C(0.25)]), ("conv3", [XAVIER, C()]), ("PReLU3", [C(0.25)]),
         ("conv4-1", [XAVIER, C()]), ("conv4-2", [XAVIER, C()])],
    "kpzhang93__MTCNN_face_detection_alignment__code__codes__MTCNNv2__model__det3":
        [("conv1", [XAVIER, C()]), ("prelu1", [C(0.25)]), ("conv2", [XAVIER, C()]),
         ("prelu2", [C(0.25)]), ("conv3", [XAVIER, C()]), ("prelu3", [C(0.25)]),
         ("conv4", [XAVIER, C()]), ("prelu4", [C(0.25)]), ("conv5", [XAVIER, C()]),
         ("prelu5", [C(0.25)]), ("conv6-1", [XAVIER, C()]), ("conv6-2", [XAVIER, C()]),
         ("conv6-3", [XAVIER, C()])],
}
# deploy nets whose layers give no filler: Caffe's default, constant 0, everywhere
NO_FILLER_NETS = [
    "BVLC__caffe__examples__cifar10__cifar10_full", "BVLC__caffe__examples__cifar10__cifar10_quick",
    "BVLC__caffe__examples__siamese__mnist_siamese", "forresti__SqueezeNet__SqueezeNet_v1.1__deploy",
]


@pytest.mark.parametrize("name", sorted(OTHER_NETS))
def test_corpus_nets_byte_equal_to_caffe(name):
    ref = golden(name)
    ours = walk(OTHER_NETS[name], ref, 1701)
    assert sorted(ours) == sorted(ref.files)
    bad = [k for k in ref.files if not byte_equal(ours[k], ref[k])]
    assert not bad, bad


@pytest.mark.parametrize("name", NO_FILLER_NETS)
def test_nets_without_fillers_are_constant_zero(name):
    ref = golden(name)
    for key in ref.files:
        assert byte_equal(fill(ref[key].shape, {}, rng=CaffeRNG(1701)), ref[key]), key


# --- draws: what each filler takes from the stream -----------------------------------------

def test_words_drawn_per_filler():
    rng = CaffeRNG(1)
    fill((3, 4), C(2.0), rng=rng)
    fill((1, 1, 4, 4), {"type": "bilinear"}, rng=rng)
    assert rng.consumed == 0                                        # nothing drawn
    fill((3, 4), {"type": "uniform"}, rng=rng)
    assert rng.consumed == 12                                       # one word per value
    fill((3, 4), {"type": "positive_unitball"}, rng=rng)
    assert rng.consumed == 24
    ref = rng.copy()
    fill((3, 4), {"type": "gaussian", "sparse": 0}, rng=rng)      # p == 0: no mask words
    ref.gaussian(12)
    assert rng.consumed == ref.consumed
    fill((3, 4), {"type": "gaussian", "sparse": 2}, rng=rng)      # values, then 12 mask words
    ref.gaussian(12)
    ref.bernoulli(12, 2 / 3)
    assert rng.consumed == ref.consumed
    assert np.array_equal(rng.words(4), ref.words(4))


def test_sparse_mask_is_drawn_after_the_values_and_multiplied():
    shape, sparse, std = (7, 9), 3, 0.5
    got = fill(shape, {"type": "gaussian", "std": std, "sparse": sparse}, rng=CaffeRNG(4))
    s = CaffeRNG(4)
    values = s.gaussian(63, 0, std)
    mask = s.bernoulli(63, f32(sparse) / f32(shape[0]))
    expect = (values * mask.astype(f32)).reshape(shape)             # keeps signed zeros
    assert byte_equal(got, expect)


def test_positive_unitball_sums_left_to_right_in_float32(monkeypatch):
    def reference(shape, seed):
        v = CaffeRNG(seed).uniform(int(np.prod(shape)), 0, 1).reshape(shape[0], -1)
        out = np.empty_like(v)
        for i, row in enumerate(v):
            s = f32(0)
            for x in row:
                s = f32(s + x)
            out[i] = row / s
        return out.reshape(shape)

    for shape in [(5, 13), (3, 2, 7), (1, 300), (40, 1)]:
        assert byte_equal(positive_unitball(shape, rng=CaffeRNG(9)), reference(shape, 9)), shape
    # several row and column pieces
    monkeypatch.setattr(FILL_MODULE, "_COLUMNS", 4)
    monkeypatch.setattr(FILL_MODULE, "_SCRATCH", 8)
    for shape in [(5, 13), (7, 9), (3, 4)]:
        assert byte_equal(positive_unitball(shape, rng=CaffeRNG(9)), reference(shape, 9)), shape


# --- bilinear ---------------------------------------------------------------------------------

def test_bilinear_k4_exact():
    k = np.array([0.25, 0.75, 0.75, 0.25], f32)
    out = bilinear((3, 2, 4, 4))
    assert out.dtype == np.float32 and out.shape == (3, 2, 4, 4)
    for n in range(3):
        for c in range(2):
            assert np.array_equal(out[n, c], np.outer(k, k))
    assert out[0, 0, 0].tolist() == [0.0625, 0.1875, 0.1875, 0.0625]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8, 9, 16])
def test_bilinear_versions_follow_their_centre(k):
    f = math.ceil(k / 2)
    for version, c in (("master", (k - 1) / (2 * f)), ("1.0", (2 * f - 1 - f % 2) / (2 * f))):
        c = f32(c)
        a = np.array([f32(1) - abs(f32(x) / f32(f) - c) for x in range(k)], f32)
        assert byte_equal(bilinear((1, 1, k, k), caffe_version=version)[0, 0], a[:, None] * a[None, :])
    same = np.array_equal(bilinear((1, 1, k, k)), bilinear((1, 1, k, k), caffe_version="1.0"))
    assert same == (k % 4 in (0, 1)), k              # the formulas differ for K = 2, 3, 6, 7, ...


# --- fans -------------------------------------------------------------------------------------

def test_fans_master():
    assert fan_in_fan_out((5, 6, 3, 3)) == (54, 45)
    assert fan_in_fan_out((11, 6534)) == (6534, 11)
    assert fan_in_fan_out((6,)) == (1, 6)
    assert fan_in_fan_out((2, 3, 4, 5, 6)) == (360, 240)
    assert variance_norm_n((5, 6, 3, 3), "FAN_IN") == f32(54)
    assert variance_norm_n((5, 6, 3, 3), "FAN_OUT") == f32(45)
    assert variance_norm_n((5, 6, 3, 3), "AVERAGE") == f32(49.5)
    assert variance_norm_n((6,), 2) == f32(3.5)
    assert variance_norm_n((7, 5, 1, 3), 2).dtype == np.float32
    with pytest.raises(FillerError, match="no axes"):
        fan_in_fan_out(())
    with pytest.raises(ValueError):
        variance_norm_n((3, 3), "FAN_AROUND")


def test_fans_caffe_1_0():
    assert fan_in_fan_out((5, 6, 3, 3), "1.0") == (54, 45)
    assert fan_in_fan_out((6,), "1.0") == (1, 6)
    assert fan_in_fan_out((), "1.0") == (1, 1)
    with pytest.raises(FillerError, match="more than 4 axes"):
        fan_in_fan_out((2, 3, 4, 5, 6), "1.0")
    for f in (xavier, msra):
        with pytest.raises(ValueError, match="more than 4 axes"):
            f((2, 3, 4, 5, 6), rng=0, caffe_version="1.0")
        assert f((2, 3, 4, 5, 6), rng=0).shape == (2, 3, 4, 5, 6)
    with pytest.raises(ValueError):
        fan_in_fan_out((3, 3), "2.0")


def test_fill_xavier_msra_scale_from_fans():
    # the uniform bound and the normal std are computed in float32 from n
    shape = (7, 5, 1, 3)
    for mode in (0, 1, 2):
        n = variance_norm_n(shape, mode)
        s = np.sqrt(f32(3) / n)
        assert byte_equal(xavier(shape, mode, rng=CaffeRNG(2)),
                          CaffeRNG(2).uniform(105, -s, s).reshape(shape))
        sigma = np.sqrt(f32(2) / n)
        assert byte_equal(msra(shape, mode, rng=CaffeRNG(2)),
                          CaffeRNG(2).gaussian(105, 0, sigma).reshape(shape))
        assert byte_equal(variance_scaling(shape, 2.0, mode, "normal", rng=CaffeRNG(2)),
                          msra(shape, mode, rng=CaffeRNG(2)))


# --- statistics with the fast stream ------------------------------------------------------------

SHAPES = [(120000,), (300, 400), (40, 50, 60), (64, 32, 7, 7), (16, 8, 3, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["FAN_IN", "FAN_OUT", "AVERAGE"])
def test_xavier_statistics(shape, mode):
    x = xavier(shape, mode, rng=FastRNG(11)).astype(np.float64).ravel()
    n = float(variance_norm_n(shape, mode))
    s = float(np.sqrt(f32(3) / f32(n)))
    N = x.size
    assert np.abs(x).max() <= s                     # within +-sqrt(3/n), exactly
    var = s * s / 3                                 # U(-s, s): variance s^2/3 = 1/n
    assert abs(x.mean()) < 6 * math.sqrt(var / N)
    # Var(x^2) = E[x^4] - var^2 = s^4/5 - s^4/9
    assert abs((x * x).mean() - var) < 6 * math.sqrt((s ** 4 / 5 - s ** 4 / 9) / N)
    assert abs(var - 1 / n) < 1e-6 / n


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["FAN_IN", "FAN_OUT", "AVERAGE"])
def test_msra_statistics(shape, mode):
    x = msra(shape, mode, rng=FastRNG(12)).astype(np.float64).ravel()
    var = 2.0 / float(variance_norm_n(shape, mode))
    N = x.size
    assert abs(x.mean()) < 6 * math.sqrt(var / N)
    assert abs((x * x).mean() - var) < 6 * var * math.sqrt(2.0 / N)   # Var(x^2) = 2 var^2


@pytest.mark.parametrize("sparse", [0, 1, 4, 50, 200])
def test_sparse_fraction(sparse):
    shape = (200, 1000)
    x = gaussian(shape, 0.0, 0.3, sparse=sparse, rng=FastRNG(13))
    p = sparse / shape[0]
    frac = np.count_nonzero(x) / x.size
    assert abs(frac - p) <= 6 * math.sqrt(p * (1 - p) / x.size) + 1e-12
    if sparse == 0:
        assert not x.any()


@pytest.mark.parametrize("shape", [(5, 13), (64, 3, 3, 3), (2, 100000), (1000, 7), (3,)])
def test_unitball_rows_sum_to_one(shape):
    x = positive_unitball(shape, rng=FastRNG(14))
    assert x.dtype == np.float32 and x.shape == shape and (x >= 0).all()
    rows = x.reshape(shape[0], -1).astype(np.float64)
    dim = rows.shape[1]
    # float32 rounding: each of the dim quotients and the sum itself
    tol = 4 * dim * np.finfo(np.float32).eps
    assert np.all(np.abs(rows.sum(axis=1) - 1) <= tol)


def test_gaussian_and_uniform_statistics():
    g = gaussian((400, 500), 0.001, 0.02, rng=FastRNG(15)).astype(np.float64)
    assert abs(g.mean() - 0.001) < 6 * 0.02 / math.sqrt(g.size)
    assert abs(g.std() - 0.02) < 6 * 0.02 / math.sqrt(2 * g.size)
    u = uniform((400, 500), -2, 3, rng=FastRNG(16))
    assert u.min() >= -2 and u.max() < 3
    assert abs(u.astype(np.float64).mean() - 0.5) < 6 * 5 / math.sqrt(12 * u.size)


# --- rng argument -------------------------------------------------------------------------------

def test_rng_argument_forms():
    shape = (8, 3, 3, 3)
    a = xavier(shape, rng=5)
    assert np.array_equal(a, xavier(shape, rng=FastRNG(5)))
    assert np.array_equal(a, xavier(shape, rng=np.random.default_rng(5)))
    assert xavier(shape).shape == shape                              # None: fresh entropy
    assert byte_equal(xavier(shape, rng=CaffeRNG(5)), xavier(shape, rng=CaffeRNG(5)))
    assert not np.array_equal(xavier(shape, rng=CaffeRNG(5)), a)


# --- FillerParameter handling and Caffe's CHECKs -------------------------------------------------

def test_filler_params_defaults_and_objects():
    p = filler_params({})
    assert p == {"type": "constant", "value": 0, "min": 0, "max": 1, "mean": 0, "std": 1,
                 "sparse": -1, "variance_norm": 0}
    msg = types.SimpleNamespace(type="xavier", value=0.0, min=0.0, max=1.0, mean=0.0, std=1.0,
                                sparse=-1, variance_norm=2)
    assert byte_equal(fill((4, 5), msg, rng=CaffeRNG(3)),
                      fill((4, 5), {"type": "xavier", "variance_norm": "AVERAGE"}, rng=CaffeRNG(3)))
    assert filler_params({"type": "gaussian", "std": 0.1})["std"] == f32(0.1)
    with pytest.raises(ValueError, match="Unknown FillerParameter field"):
        filler_params({"type": "gaussian", "stdev": 0.1})


def test_fill_takes_caffe_pb2_messages():
    caffe_pb2 = pytest.importorskip("fillers.caffe_pb2")
    fp = caffe_pb2.FillerParameter(type="msra", variance_norm=caffe_pb2.FillerParameter.FAN_OUT)
    assert byte_equal(fill((6, 4, 3, 3), fp, rng=CaffeRNG(8)),
                      msra((6, 4, 3, 3), "FAN_OUT", rng=CaffeRNG(8)))
    assert byte_equal(fill((3,), caffe_pb2.FillerParameter()), np.zeros(3, f32))


def test_unknown_filler_type_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        fill((3, 3), {"type": "lecun_normal"})
    for name in FILLERS:
        assert name in str(e.value)


@pytest.mark.parametrize("kind", ["constant", "uniform", "positive_unitball", "xavier", "msra"])
def test_sparse_unsupported(kind):
    with pytest.raises(ValueError, match="does not support sparse"):
        fill((4, 4), {"type": kind, "sparse": 2}, rng=CaffeRNG(1))


@pytest.mark.parametrize("spec,shape,match", [
    ({"type": "bilinear", "sparse": 1}, (1, 1, 2, 2), "does not support sparse"),
    ({"type": "bilinear"}, (1, 4, 4), "4 axes"),
    ({"type": "bilinear"}, (1, 1, 3, 4), "square"),
    ({"type": "gaussian", "std": 0}, (3, 3), "std > 0"),
    ({"type": "gaussian", "std": -1}, (3, 3), "std > 0"),
    ({"type": "gaussian", "sparse": -2}, (3, 3), "sparse >= -1"),
    ({"type": "gaussian", "sparse": 4}, (3, 3), "sparse <= shape"),
    ({"type": "gaussian", "sparse": 0}, (), "at least one axis"),
    ({"type": "uniform", "min": 1, "max": 0}, (3,), "min <= max"),
    ({"type": "xavier"}, (), "no axes"),
    ({"type": "msra"}, (), "no axes"),
    ({"type": "positive_unitball"}, (), "no axes"),
    ({"type": "xavier"}, (3, 0), "empty blob"),
    ({"type": "constant"}, (0,), "empty blob"),
    ({"type": "gaussian"}, (2, 0, 3), "empty blob"),
    ({"type": "xavier", "variance_norm": 3}, (3, 3), "variance_norm"),
])
def test_caffe_checks_raise_before_drawing(spec, shape, match):
    rng = CaffeRNG(1)
    with pytest.raises(FillerError, match=match) as e:
        fill(shape, spec, rng=rng)
    assert isinstance(e.value, ValueError)
    assert str(e.value).endswith(".")
    assert rng.consumed == 0


def test_caffe_1_0_unitball_and_scalar_blobs():
    assert positive_unitball((), rng=CaffeRNG(1), caffe_version="1.0").shape == ()
    with pytest.raises(ValueError, match="more than 4 axes"):
        positive_unitball((1, 2, 3, 4, 5), rng=0, caffe_version="1.0")
    assert xavier((), rng=0, caffe_version="1.0").shape == ()
    assert bilinear((1, 1, 0, 0)).shape == (1, 1, 0, 0)              # Caffe loops zero times


def test_results_are_float32_c_contiguous():
    for arr in (constant((2, 3), 1.5), uniform((2, 3), rng=0), gaussian((2, 3), rng=0),
                positive_unitball((2, 3), rng=0), xavier((2, 3), rng=0), msra((2, 3), rng=0),
                bilinear((1, 1, 3, 3)), fill(4, {"type": "constant", "value": 2})):
        assert arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.writeable


def test_docstring_examples():
    result = doctest.testmod(FILL_MODULE)
    assert result.attempted > 0 and result.failed == 0
