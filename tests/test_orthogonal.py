"""The fillers the signal analysis calls for (not Caffe's): orthogonal (Saxe et al.) and
delta-orthogonal (Xiao et al.)."""

import numpy as np
import pytest

import fillers
from fillers.cli import main
from fillers.errors import FillerError
from fillers.init import delta_orthogonal, describe, fill, orthogonal
from fillers.rng import CaffeRNG


@pytest.mark.parametrize("shape", [(8, 8), (5, 13), (13, 5), (16, 3, 3, 3), (3, 16, 3, 3), (7,), (4, 2, 5)])
@pytest.mark.parametrize("gain", [1.0, 2.0 ** 0.5])
def test_orthogonal_rows_or_columns_are_orthonormal(shape, gain):
    w = orthogonal(shape, gain=gain, rng=1)
    assert w.dtype == np.float32 and w.shape == shape
    m = w.reshape(shape[0], -1).astype(np.float64) / gain
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    assert np.max(np.abs(gram - np.eye(min(rows, cols)))) < 1e-5


def test_orthogonal_is_seeded_and_draws_like_a_gaussian_fill():
    assert np.array_equal(orthogonal((6, 9), rng=3), orthogonal((6, 9), rng=3))
    assert not np.array_equal(orthogonal((6, 9), rng=3), orthogonal((6, 9), rng=4))
    a, b = CaffeRNG(1701), CaffeRNG(1701)
    orthogonal((6, 9), rng=a)
    fill((6, 9), {"type": "gaussian"}, rng=b)
    assert a.consumed == b.consumed  # the stream moves as for a gaussian fill of the blob


def test_orthogonal_is_haar_distributed_not_biased():
    """Sign-corrected QR: the mean of many 3x3 orthogonal matrices is ~0 entrywise."""
    mean = np.mean([orthogonal((3, 3), rng=s) for s in range(2000)], axis=0)
    assert np.max(np.abs(mean)) < 0.05


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (8, 8, 5, 5), (6, 6, 4, 4), (12, 3, 3, 3, 3)])
def test_delta_orthogonal_centre_tap_only(shape):
    w = delta_orthogonal(shape, gain=2.0, rng=0)
    centre = (slice(None), slice(None)) + tuple(k // 2 for k in shape[2:])
    c = w[centre].astype(np.float64) / 2.0
    assert np.max(np.abs(c.T @ c - np.eye(shape[1]))) < 1e-5
    off = w.copy()
    off[centre] = 0
    assert not off.any()


def test_delta_orthogonal_needs_no_more_inputs_than_outputs():
    with pytest.raises(FillerError, match="in channels <= out channels.*3 in and 2 out"):
        delta_orthogonal((2, 3, 3, 3), rng=0)


def test_compact_form_gain_and_description():
    p = {"type": "orthogonal", "gain": 3.0}
    assert describe(p) == "orthogonal(gain=3)"
    w = fill((4, 10), "orthogonal:gain=3", rng=0)
    assert np.allclose(w @ w.T, 9 * np.eye(4), atol=1e-4)
    assert fillers.orthogonal is orthogonal


def test_cli_fills_a_net_orthogonally(tmp_path, capsys):
    p = tmp_path / "n.prototxt"
    p.write_text('input: "x" input_shape { dim: 1 dim: 8 dim: 6 dim: 6 }\n'
                 'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 16 kernel_size: 3 } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 4 } }\n')
    npz = tmp_path / "w.npz"
    assert main([str(p), "--filler", "delta_orthogonal", "--seed", "2", "--npz", str(npz), "--no-caffemodel"]) == 0
    assert "delta_orthogonal(gain=1)" in capsys.readouterr().out
    w = np.load(npz)["c/0"]
    assert np.count_nonzero(w) == 16 * 8 and np.allclose(w[:, :, 1, 1].T @ w[:, :, 1, 1], np.eye(8), atol=1e-5)
    fc = np.load(npz)["fc/0"].astype(np.float64)  # 4 x 256 here: delta_orthogonal of a matrix is orthogonal
    assert np.allclose(fc @ fc.T, np.eye(4), atol=1e-5)
