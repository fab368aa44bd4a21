"""Streaming fills (fillers.stream): the same numbers as the in-memory fill, Caffe's bit
for bit, in memory that does not grow with the net."""

import tracemalloc

import numpy as np
import pytest

import fillers.stream as st
from conftest import GOLDEN, golden_param, golden_source
from fillers import load
from fillers.caffemodel import read_caffemodel
from fillers.errors import NetError, UsageError

GOLD_FILES = sorted((GOLDEN / "fills").glob("*.npz"))

#: a net exercising every path of the streaming fill: shared blobs (param { name }),
#: fills computed per blob (positive_unitball, sparse gaussian, bilinear), constants,
#: a recurrent layer's dropped draws, BatchNorm's fresh statistics, a blob of no axes
ODD = """name: "odd"
layer { name: "in" type: "Input" top: "x" top: "seq" top: "cont" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 4 dim: 2 dim: 5 } shape { dim: 4 dim: 2 }
                shape { dim: 2 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
  param { name: "shared_w" } param { name: "shared_b" }
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "xavier" }
                      bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "c2" type: "Convolution" bottom: "x" top: "c2"
  param { name: "shared_w" } param { name: "shared_b" }
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 3 }
                      bias_filler { type: "constant" value: 5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "pr" type: "PReLU" bottom: "c1" top: "c1" prelu_param { channel_shared: true } }
layer { name: "ub" type: "Convolution" bottom: "c2" top: "ub"
  convolution_param { num_output: 7 kernel_size: 3 weight_filler { type: "positive_unitball" }
                      bias_filler { type: "gaussian" std: 0.5 sparse: 1 } } }
layer { name: "sp" type: "InnerProduct" bottom: "ub" top: "sp"
  inner_product_param { num_output: 9 weight_filler { type: "gaussian" std: 0.1 sparse: 3 } } }
layer { name: "up" type: "Deconvolution" bottom: "ub" top: "up"
  convolution_param { num_output: 7 group: 7 kernel_size: 4 stride: 2 bias_term: false
                      weight_filler { type: "bilinear" } } }
layer { name: "ms" type: "InnerProduct" bottom: "sp" top: "ms"
  inner_product_param { num_output: 300 weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "lstm" type: "LSTM" bottom: "seq" bottom: "cont" top: "h"
  recurrent_param { num_output: 6 weight_filler { type: "uniform" min: -0.1 max: 0.1 }
                    bias_filler { type: "constant" value: 0 } } }
"""


def _bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(st, "CHUNK", 37)


@pytest.mark.shared
@pytest.mark.parametrize("path", [golden_param(p.stem.split(".seed")[0], p, id=p.stem) for p in GOLD_FILES])
def test_streamed_fill_is_byte_exact_with_caffe(path, tmp_path, monkeypatch):
    net_id, seed = path.stem, 1701
    if ".seed" in net_id:
        net_id, s = net_id.split(".seed")
        seed = int(s)
    net = load(golden_source(net_id))
    monkeypatch.setattr(st, "CHUNK", 4099 if net.n_params < 3_000_000 else 1 << 16)  # chunks cut every blob
    npz, model = tmp_path / "w.npz", tmp_path / "w.caffemodel"
    st.stream_fill(net, model, npz=npz, seed=seed, rng="caffe")
    gold, mine, back = np.load(path), np.load(npz), read_caffemodel(model)
    assert sorted(mine.files) == sorted(gold.files)
    for key in gold.files:
        layer, index = key.rsplit("/", 1)
        assert np.array_equal(mine[key].view(np.uint32), gold[key].view(np.uint32)), key
        assert np.array_equal(back[layer][int(index)].view(np.uint32), gold[key].view(np.uint32)), key


@pytest.mark.parametrize("rng", ["caffe", "fast"])
@pytest.mark.parametrize("batchnorm", ["caffe", "identity"])
def test_streamed_equals_in_memory(tmp_path, tiny_chunks, rng, batchnorm):
    net = load("odd.prototxt", text=ODD)
    mem = net.fill(seed=5, rng=rng, batchnorm=batchnorm)
    mem.save(tmp_path / "a.caffemodel")
    mem.save_npz(tmp_path / "a.npz")
    res = st.stream_fill(net, tmp_path / "b.caffemodel", npz=tmp_path / "b.npz", seed=5, rng=rng,
                         batchnorm=batchnorm)
    assert _bytes(tmp_path / "a.caffemodel") == _bytes(tmp_path / "b.caffemodel")
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)) and a[k].shape == b[k].shape, k
    assert res.warnings == mem.warnings and res.seed == mem.seed and res.rng == mem.rng
    for r1, r2 in zip(mem.records, res.records):
        assert (r1.layer, r1.index, r1.shape, r1.filler, r1.source, r1.fan_in, r1.fan_out) == \
               (r2.layer, r2.index, r2.shape, r2.filler, r2.source, r2.fan_in, r2.fan_out)
        assert np.allclose(r1.stats(), r2.stats(), rtol=1e-5, atol=1e-6), (r1.layer, r1.index)
    # the sharer's blobs are the owner's values
    back = read_caffemodel(tmp_path / "b.caffemodel")
    assert np.array_equal(back["c1"][0], back["c2"][0]) and np.array_equal(back["c1"][1], back["c2"][1])


@pytest.mark.parametrize("rng", ["caffe", "fast"])
def test_streamed_weights_equal_in_memory(tmp_path, tiny_chunks, rng):
    """Trained blobs copied (a sharer's copy lands in the owner's memory too), the rest filled."""
    net = load("odd.prototxt", text=ODD)
    net.fill(seed=1, rng=rng).save(tmp_path / "trained.caffemodel")
    trained = read_caffemodel(tmp_path / "trained.caffemodel")
    partial = {k: v for k, v in trained.items() if k in ("c2", "ms", "up")}
    partial["gone"] = [np.zeros(3, np.float32)]
    mem = net.fill(seed=9, rng=rng, weights=partial)
    mem.save(tmp_path / "a.caffemodel")
    res = st.stream_fill(net, tmp_path / "b.caffemodel", seed=9, rng=rng, weights=partial)
    assert _bytes(tmp_path / "a.caffemodel") == _bytes(tmp_path / "b.caffemodel")
    back = read_caffemodel(tmp_path / "b.caffemodel")
    assert np.array_equal(back["c1"][0], trained["c2"][0])  # copied into the shared memory
    assert res.trained.copied == ["c2", "up", "ms"] and res.trained.ignored == ["gone"]
    assert "c1" in res.trained.filled and "c2" not in res.trained.filled
    assert [r.filler for r in res.records if r.layer == "c2"] == ["weights", "weights"]


def test_mapped_weights_file_is_copied(tmp_path, tiny_chunks):
    net = load("odd.prototxt", text=ODD)
    net.fill(seed=1).save(tmp_path / "t.caffemodel")
    res = st.stream_fill(net, tmp_path / "copy.caffemodel", weights=str(tmp_path / "t.caffemodel"))
    assert _bytes(tmp_path / "t.caffemodel") == _bytes(tmp_path / "copy.caffemodel")
    assert res.trained.path == str(tmp_path / "t.caffemodel") and not res.trained.filled
    assert res.trained.summary().startswith(f"weights: copied {len(net.layers)} layers from ")


BIG = """layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1000 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 1000 weight_filler { type: "xavier" } } }
layer { name: "fc2" type: "InnerProduct" bottom: "y" top: "z"
  inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.1 } } }
"""


@pytest.mark.parametrize("rng", ["caffe", "fast"])
def test_memory_is_bounded_by_the_chunk(tmp_path, monkeypatch, rng):
    """8 MB of weights written through 16 KiB chunks: the Python heap (numpy's arrays
    included) never holds more than a few chunks."""
    monkeypatch.setattr(st, "CHUNK", 4096)
    net = load("big.prototxt", text=BIG)
    assert net.n_params * 4 > 7_000_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        st.stream_fill(net, tmp_path / "b.caffemodel", npz=tmp_path / "b.npz", seed=1, rng=rng)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # the net is 8 MB
    z = np.load(tmp_path / "b.npz")
    assert z["fc1/0"].shape == (1000, 1000) and abs(float(z["fc2/0"].std()) - 0.1) < 0.002


def test_mapped_pages_are_given_back(tmp_path):
    """release() drops the pages of a mapped weights file after they are copied."""
    path = tmp_path / "w.caffemodel"
    load("big.prototxt", text=BIG).fill(seed=1).save(path)
    arr = read_caffemodel(path)["fc1"][0]
    assert st._mapping(arr) is not None
    assert st._mapping(np.zeros(3)) is None
    st.release(np.zeros(10))  # anonymous memory: left alone
    a = np.arange(10, dtype=np.float32)
    st.release(a)
    assert a.tolist() == list(range(10))
    before = float(arr.sum())
    for piece in st.array_chunks(arr, 1 << 16):
        pass
    assert float(arr.sum()) == before  # read again from the file


def test_in_memory_fill_refuses_what_does_not_fit(monkeypatch):
    import fillers.netfill as nf

    monkeypatch.setattr(nf, "available_memory", lambda: 1000)
    net = load("big.prototxt", text=BIG)
    with pytest.raises(UsageError, match=r"stream_fill.*fill_to.*fill-net NET -o OUT.caffemodel"):
        net.fill(seed=1)


def test_fill_to_and_export(tmp_path):
    net = load("big.prototxt", text=BIG)
    res = net.fill_to(tmp_path / "w.caffemodel", seed=3, filler="msra")
    assert res.sizes["caffemodel"] == (tmp_path / "w.caffemodel").stat().st_size
    report = res.to_onnx(tmp_path / "w.onnx", check=True)
    assert report.ok
    params = res.params
    assert params["fc1"][0].shape == (1000, 1000) and not params["fc1"][0].flags.writeable


def test_errors_name_the_layer(tmp_path):
    bad = BIG.replace('type: "xavier"', 'type: "xavier" sparse: 2')
    net = load("bad.prototxt", text=bad)
    with pytest.raises(NetError, match="layer 'fc1' \\(InnerProduct\\).*sparse"):
        st.stream_fill(net, tmp_path / "x.caffemodel", seed=1)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_running_stats_match_numpy():
    rs = st.RunningStats()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_003) * 0.01 + 3).astype(np.float32)
    for i in range(0, x.size, 997):
        rs.add(x[i:i + 997])
    m, s = rs.result()
    x64 = x.astype(np.float64)
    assert abs(m - x64.mean()) < 1e-7 * 3 and abs(s / x64.std() - 1) < 1e-5  # std 0.01 around 3: no cancellation
    c = st.RunningStats()
    c.add(np.full(1000, 0.1, np.float32))
    assert c.result()[1] == 0.0


def test_a_stream_that_cannot_be_copied_still_gives_the_same_file(tmp_path):
    """Shared blobs are drawn again from a copy of the stream; a user's stream object
    that cannot be copied has the owner's values held instead."""
    from fillers.rng import CaffeRNG

    class Wrapped:
        def __init__(self, s):
            self.s = s

        def uniform(self, *a):
            return self.s.uniform(*a)

        def gaussian(self, *a):
            return self.s.gaussian(*a)

        def bernoulli(self, *a):
            return self.s.bernoulli(*a)

    net = load("odd.prototxt", text=ODD)
    net.fill(rng=Wrapped(CaffeRNG(3))).save(tmp_path / "a.caffemodel")
    st.stream_fill(net, tmp_path / "b.caffemodel", rng=Wrapped(CaffeRNG(3)))
    assert _bytes(tmp_path / "a.caffemodel") == _bytes(tmp_path / "b.caffemodel")
