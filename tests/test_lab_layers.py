"""Each layer type's numpy backward against finite differences of its own forward, and the
engine's bookkeeping (in-place blobs, splits, shared parameters, force_backward, phases).

The golden tests (test_lab_engine.py) cover the layer types real nets use; these cover the
rest (losses, Accuracy, Embed, Deconvolution, MVN, ...) on tiny nets: the directional
derivative of ``sum(output * diff)`` (plus the losses) along a random direction must match
the engine's gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from fillers.lab import Engine, LayerContext, stats
from fillers.net import load


def _net(tmp_path, inputs, body, name="t"):
    text = "".join(
        f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ '
        + " ".join(f"dim: {d}" for d in s) + " } } }\n" for n, s in inputs.items())
    path = tmp_path / f"{name}.prototxt"
    path.write_text(f'name: "{name}"\n' + text + body)
    return load(str(path))


def _objective(eng, feeds, out_diffs):
    out = eng.forward(feeds)
    total = 0.0
    for li, layer in enumerate(eng.net.layers):
        for j, w in enumerate(eng.loss_weights[li]):
            if w:
                total += w * float(eng._data[eng.ltops[li][j]].astype(np.float64).sum())
    for n, d in out_diffs.items():
        total += float((out[n].astype(np.float64) * d).sum())
    return total


def _gradcheck(net, feeds, params, rng, skip_inputs=(), phase="TEST", eps=1e-3, tol=2e-2):
    eng = Engine(net, params, phase=phase, rng=0)
    out = eng.forward(feeds)
    loss_tops = {eng.vname[eng.ltops[li][j]] for li in range(len(net.layers))
                 for j, w in enumerate(eng.loss_weights[li]) if w}
    out_diffs = {n: rng.uniform(-1, 1, out[n].shape).astype(np.float32) for n in net.outputs if n not in loss_tops}
    diffs, pdiffs = eng.backward(out_diffs)
    checked = 0
    targets = [("input", n) for n in feeds if n not in skip_inputs]
    targets += [("param", (l, j)) for l, arrs in params.items() for j in range(len(arrs))]
    for kind, key in targets:
        base = feeds[key] if kind == "input" else params[key[0]][key[1]]
        g = diffs[key] if kind == "input" else pdiffs[key[0]][key[1]]
        v = rng.standard_normal(base.shape).astype(np.float32)
        vals = []
        for sgn in (1, -1):
            x = (base.astype(np.float64) + sgn * eps * v).astype(np.float32)
            f2 = dict(feeds)
            p2 = {k: list(a) for k, a in params.items()}
            if kind == "input":
                f2[key] = x
            else:
                p2[key[0]][key[1]] = x
            vals.append(_objective(Engine(net, p2, phase=phase, rng=0), f2, out_diffs))
        fd = (vals[0] - vals[1]) / (2 * eps)
        an = float((g.astype(np.float64) * v).sum())
        assert abs(fd - an) <= tol * max(1.0, abs(fd), abs(an)), f"{kind} {key}: finite difference {fd:.6g}, " \
                                                                   f"engine {an:.6g}"
        checked += 1
    return checked


def _params(net, rng, scale=0.5):
    out = {}
    for layer in net.layers:
        arrs = []
        for pb, owner in zip(layer.params, layer.owners):
            if owner is not None:
                arrs.append(out[net.layers[owner[0]].name][owner[1]])
            elif layer.type == "BatchNorm":
                arrs.append(np.abs(rng.standard_normal(pb.shape)).astype(np.float32) + 0.5)
            else:
                arrs.append((rng.standard_normal(pb.shape) * scale).astype(np.float32))
        if arrs:
            out[layer.name] = arrs
    return out


X = {"x": (2, 4, 5, 5)}
CASES = {
    "conv_group_dilation": (X, 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
                               'num_output: 6 kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2 } }'),
    "conv_1d": ({"x": (2, 3, 9)}, 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
                                  'num_output: 4 kernel_size: 3 stride: 2 } }'),
    "deconv": (X, 'layer { name: "d" type: "Deconvolution" bottom: "x" top: "y" convolution_param { num_output: 4 '
                  'kernel_size: 3 stride: 2 pad: 1 group: 2 } }'),
    "ip_axis_transpose": (X, 'layer { name: "i" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { '
                             'num_output: 3 axis: 2 transpose: true } }'),
    "pool_max_ceil": (X, 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param { pool: MAX '
                         'kernel_size: 2 stride: 2 } }'),
    "pool_ave_pad": (X, 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE '
                        'kernel_size: 3 stride: 2 pad: 1 } }'),
    "spp": (X, 'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 2 pool: AVE } }'),
    "lrn_across": (X, 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 0.5 '
                      'beta: 0.75 k: 2 } }'),
    "lrn_within": (X, 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 0.5 '
                      'beta: 0.75 norm_region: WITHIN_CHANNEL } }'),
    "batchnorm_train": (X, 'layer { name: "b" type: "BatchNorm" bottom: "x" top: "y" }'),
    "mvn": (X, 'layer { name: "m" type: "MVN" bottom: "x" top: "y" mvn_param { across_channels: true } }'),
    "scale_bias_axis": (X, 'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { axis: 1 num_axes: 2 '
                           'bias_term: true } }'),
    "scale_two_bottoms": ({"x": (2, 4, 5, 5), "s": (4,)}, 'layer { name: "s" type: "Scale" bottom: "x" bottom: "s" '
                                                           'top: "y" }'),
    "bias": (X, 'layer { name: "b" type: "Bias" bottom: "x" top: "y" }'),
    "activations": (X, 'layer { name: "a1" type: "ELU" bottom: "x" top: "a1" }\n'
                       'layer { name: "a2" type: "Sigmoid" bottom: "x" top: "a2" }\n'
                       'layer { name: "a3" type: "TanH" bottom: "x" top: "a3" }\n'
                       'layer { name: "a4" type: "AbsVal" bottom: "x" top: "a4" }\n'
                       'layer { name: "a5" type: "BNLL" bottom: "x" top: "a5" }\n'
                       'layer { name: "a6" type: "Swish" bottom: "x" top: "a6" swish_param { beta: 1.5 } }\n'
                       'layer { name: "a7" type: "ReLU" bottom: "x" top: "a7" relu_param { negative_slope: 0.1 } }\n'
                       'layer { name: "a8" type: "Clip" bottom: "x" top: "a8" clip_param { min: -0.5 max: 0.5 } }\n'
                       'layer { name: "a9" type: "PReLU" bottom: "x" top: "a9" }\n'
                       'layer { name: "a10" type: "Exp" bottom: "x" top: "a10" exp_param { base: 2 scale: 0.5 '
                       'shift: 0.1 } }\n'
                       'layer { name: "a11" type: "Power" bottom: "a10" top: "a11" power_param { power: 1.5 '
                       'scale: 2 shift: 0.5 } }\n'
                       'layer { name: "a12" type: "Log" bottom: "a10" top: "a12" log_param { base: 10 scale: 2 '
                       'shift: 1 } }\n'),
    "shape_layers": (X, 'layer { name: "sl" type: "Slice" bottom: "x" top: "s1" top: "s2" slice_param { axis: 1 '
                        'slice_point: 1 } }\n'
                        'layer { name: "cc" type: "Concat" bottom: "s2" bottom: "x" top: "cc" }\n'
                        'layer { name: "t" type: "Tile" bottom: "s1" top: "t" tile_param { axis: 2 tiles: 2 } }\n'
                        'layer { name: "cr" type: "Crop" bottom: "t" bottom: "s1" top: "cr" crop_param { axis: 2 '
                        'offset: 1 offset: 0 } }\n'
                        'layer { name: "r" type: "Reshape" bottom: "cc" top: "r" reshape_param { shape { dim: 0 '
                        'dim: -1 } } }\n'
                        'layer { name: "f" type: "Flatten" bottom: "cr" top: "f" }\n'
                        'layer { name: "sm" type: "Softmax" bottom: "r" top: "sm" }\n'
                        'layer { name: "rd" type: "Reduction" bottom: "s2" top: "rd" reduction_param { '
                        'operation: SUMSQ axis: 1 coeff: 0.5 } }\n'),
    "eltwise": (X, 'layer { name: "e0" type: "Eltwise" bottom: "x" bottom: "x" top: "e0" eltwise_param { '
                   'operation: PROD } }\n'
                   'layer { name: "e1" type: "Eltwise" bottom: "x" bottom: "e0" top: "e1" eltwise_param { '
                   'operation: SUM coeff: 2 coeff: -0.5 } }\n'
                   'layer { name: "e2" type: "Eltwise" bottom: "e1" bottom: "x" top: "e2" eltwise_param { '
                   'operation: MAX } }\n'),
    "lstm_static_exposed": ({"x": (3, 2, 4), "cont": (3, 2), "xs": (2, 3), "h0": (1, 2, 5), "c0": (1, 2, 5)},
                            'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" bottom: "h0" '
                            'bottom: "c0" top: "h" top: "hT" top: "cT" recurrent_param { num_output: 5 '
                            'expose_hidden: true } }'),
    "rnn_static_exposed": ({"x": (3, 2, 4), "cont": (3, 2), "xs": (2, 3), "h0": (1, 2, 5)},
                           'layer { name: "r" type: "RNN" bottom: "x" bottom: "cont" bottom: "xs" bottom: "h0" '
                           'top: "o" top: "hT" recurrent_param { num_output: 5 expose_hidden: true } }'),
    "losses": ({"x": (4, 5), "label": (4,), "t": (4, 5), "h": (5, 5), "y": (4,)},
               'layer { name: "sm" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "l1" '
               'loss_param { ignore_label: 2 } }\n'
               'layer { name: "eu" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "l2" loss_weight: 0.5 }\n'
               'layer { name: "sce" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "l3" }\n'
               'layer { name: "hl" type: "HingeLoss" bottom: "x" bottom: "label" top: "l4" hinge_loss_param { '
               'norm: L2 } }\n'
               'layer { name: "p" type: "Softmax" bottom: "x" top: "p" }\n'
               'layer { name: "ml" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "l5" }\n'
               'layer { name: "ig" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "h" top: "l6" }\n'
               'layer { name: "cl" type: "ContrastiveLoss" bottom: "x" bottom: "t" bottom: "y" top: "l7" '
               'contrastive_loss_param { margin: 3 } }\n'
               'layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "acc" }\n'),
}
INTEGER_INPUTS = {"label": 5, "cont": None, "y": 2}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_gradients(case, tmp_path):
    inputs, body = CASES[case]
    rng = np.random.default_rng(7)
    net = _net(tmp_path, inputs, body, name=case)
    feeds = {}
    for n, s in inputs.items():
        if n == "cont":
            a = np.ones(s, dtype=np.float32)
            a[0] = 0
            a[2, 1] = 0
        elif n in INTEGER_INPUTS:
            a = rng.integers(0, INTEGER_INPUTS[n], s).astype(np.float32)
        elif n == "t":
            a = rng.uniform(0, 1, s).astype(np.float32)
        else:
            a = rng.uniform(-1, 1, s).astype(np.float32)
        feeds[n] = a
    params = _params(net, rng)
    phase = "TRAIN" if "train" in case else "TEST"
    skip = [n for n in inputs if n in INTEGER_INPUTS or (case == "losses" and n in ("t", "h"))]
    assert _gradcheck(net, feeds, params, rng, skip_inputs=skip, phase=phase) >= 1


def test_embed_and_accuracy_values(tmp_path):
    net = _net(tmp_path, {"tok": (2, 3), "s": (3, 4), "lab": (3,)},
               'layer { name: "e" type: "Embed" bottom: "tok" top: "e" embed_param { num_output: 4 input_dim: 5 } }\n'
               'layer { name: "a" type: "Accuracy" bottom: "s" bottom: "lab" top: "a" top: "pc" accuracy_param { '
               'top_k: 1 } }\n'
               'layer { name: "am" type: "ArgMax" bottom: "s" top: "am" argmax_param { top_k: 2 } }\n')
    w = np.arange(20, dtype=np.float32).reshape(5, 4)
    b = np.ones(4, dtype=np.float32)
    tok = np.array([[0, 4, 2], [1, 1, 3.7]], dtype=np.float32)
    s = np.array([[0, 1, 1, 0], [3, 0, 0, 0], [0, 0, 0, 5]], dtype=np.float32)
    eng = Engine(net, {"e": [w, b]})
    out = eng.forward({"tok": tok, "s": s, "lab": np.array([1, 0, 3], dtype=np.float32)})
    assert np.array_equal(out["e"], w[tok.astype(int)] + b)
    assert out["a"] == pytest.approx(2 / 3)  # row 0: the tie 1, 1 counts against (Caffe's >=)
    assert np.allclose(out["pc"], [1, 0, 0, 1])
    assert np.array_equal(out["am"].reshape(3, 2)[0], [2, 1])  # ties: the larger index first
    dy = np.ones((2, 3, 4), dtype=np.float32)
    _, pd = eng.backward({"e": dy})
    assert np.array_equal(pd["e"][0][:, 0], [1, 2, 1, 1, 1])  # 3.7 truncates to 3
    assert np.array_equal(pd["e"][1], [6, 6, 6, 6])


def test_max_pool_first_maximum_and_eltwise_max_rule(tmp_path):
    net = _net(tmp_path, {"x": (1, 1, 2, 4), "z": (1, 1, 2, 4)},
               'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" pooling_param { pool: MAX '
               'kernel_size: 2 stride: 2 } }\n'
               'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "z" top: "e" eltwise_param { operation: MAX } }\n')
    x = np.array([[[[1, 1, 0, 2], [1, 0, 2, 2]]]], dtype=np.float32)
    eng = Engine(net, {})
    out = eng.forward({"x": x, "z": x.copy()})
    assert np.array_equal(out["m"].ravel(), [0, 3])  # the first maximum in scan order
    d, _ = eng.backward({"p": np.array([[[[5, 7]]]], dtype=np.float32), "e": np.ones_like(x)})
    assert np.array_equal(d["x"].ravel(), [5, 0, 0, 7, 0, 0, 0, 0])
    assert np.array_equal(d["z"].ravel(), np.ones(8))  # ties between bottoms 0 and 1 go to bottom 1


def test_inplace_split_shared_and_force_backward(tmp_path):
    body = ('layer { name: "c1" type: "Convolution" bottom: "x" top: "c" param { name: "w" } param { name: "b" } '
            'convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n'
            'layer { name: "c2" type: "Convolution" bottom: "c" top: "d" param { name: "w" } param { name: "b" } '
            'convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "s" type: "Eltwise" bottom: "c" bottom: "d" top: "y" }\n')
    net = _net(tmp_path, {"x": (1, 2, 1, 3)}, body)
    w = np.array([[1, -1], [0.5, 2]], dtype=np.float32).reshape(2, 2, 1, 1)
    b = np.array([0.1, -0.2], dtype=np.float32)
    x = np.array([1, -2, 3, 0.5, 1, -1], dtype=np.float32).reshape(1, 2, 1, 3)
    eng = Engine(net, {"c1": [w, b]}, keep_splits=True)
    out = eng.forward({"x": x})
    c0 = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b.reshape(1, 2, 1, 1)
    c = np.maximum(c0, 0)
    d_ = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], c) + b.reshape(1, 2, 1, 1)
    assert np.allclose(out["c"], c) and np.allclose(out["y"], c + d_)
    dy = np.ones_like(out["y"])
    diffs, pd = eng.backward({"y": dy})
    dc = dy + np.einsum("oc,nohw->nchw", w[:, :, 0, 0], dy)  # the split: Eltwise + c2
    dc0 = dc * (c0 > 0)
    assert np.allclose(diffs["c"], dc0)  # in place: the diff w.r.t. the first writer's output
    assert np.allclose(diffs["x"], np.einsum("oc,nohw->nchw", w[:, :, 0, 0], dc0))
    dw = np.einsum("nohw,nchw->oc", dc0, x) + np.einsum("nohw,nchw->oc", dy, c)
    assert np.allclose(pd["c1"][0][:, :, 0, 0], dw)  # shared: summed into the owner
    assert np.allclose(pd["c2"][0], pd["c1"][0])
    split = [k for k in eng.split_diffs]
    assert sorted(split) == ["c_r_0_split_0", "c_r_0_split_1"]
    assert np.allclose(eng.golden_stats()["dstats/c_r_0_split_1"], stats(dy))  # consumers in net order: c2, s
    # without force_backward and without a loss: nothing is differentiated
    eng2 = Engine(net, {"c1": [w, b]}, force_backward=False)
    eng2.forward({"x": x})
    d2, p2 = eng2.backward({"y": dy})
    assert not np.any(d2["x"]) and not np.any(p2["c1"][0]) and np.array_equal(d2["y"], dy)


def test_dropout_phases_and_errors(tmp_path):
    net = _net(tmp_path, {"x": (1000,)}, 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { '
                                         'dropout_ratio: 0.25 } }\n')
    x = np.ones(1000, dtype=np.float32)
    assert np.array_equal(Engine(net, {}, phase="TEST").forward({"x": x})["y"], x)
    eng = Engine(net, {}, phase="TRAIN", rng=3)
    y = eng.forward({"x": x})["y"]
    kept = y != 0
    assert set(np.unique(y)) <= {0, np.float32(1 / 0.75)} and 0.65 < kept.mean() < 0.85
    d, _ = eng.backward({"y": x})
    assert np.array_equal(d["x"], y)
    assert np.array_equal(Engine(net, {}, phase="TRAIN", rng=3).forward({"x": x})["y"], y)  # the stream decides
    with pytest.raises(RuntimeError):
        Engine(net, {}).backward({})
    with pytest.raises(ValueError, match="no array fed"):
        Engine(net, {}).forward({})
    ctx = LayerContext("TRAIN")
    assert ctx.train and ctx.cache == {}
