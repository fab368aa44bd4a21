"""Fork layer types as plugins: registered with the same decorator as the built-in types,
loaded by --plugin (or fillers.layers.load_plugin), reading their fork parameters parsed."""

import re
import textwrap

import numpy as np
import pytest

from conftest import CORPUS
from fillers.cli import main
from fillers.layers import base, load_plugin

SHUFFLENET = CORPUS / "farmingyard__ShuffleNet/shufflenet_1x_g3_deploy.prototxt"

PLUGIN = textwrap.dedent('''
    from fillers.layers import LayerType, register_type


    class MyShuffleChannel(LayerType):
        """Reorders channels in `group` groups; the shape is unchanged.  Its parameter
        message is a fork field, read parsed (a dict: no schema given).  It replaces the
        built-in type of that name (a plugin may override one deliberately)."""

        origin = "my plugin"
        fork_params = {"shuffle_channel_param": None}

        def outputs(self, bottoms):
            group = self.fork("shuffle_channel_param")["group"]
            if bottoms[0][1] % group:
                self.fail(f"{bottoms[0][1]} channels cannot be shuffled in {group} groups")
            return [tuple(bottoms[0])]


    register_type("ShuffleChannel", MyShuffleChannel, replace=True)
''')


@pytest.fixture
def registry():
    saved = dict(base._REGISTRY)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


@pytest.fixture
def plugin(tmp_path, registry):
    path = tmp_path / "fork_layers.py"
    path.write_text(PLUGIN)
    yield path


def test_without_plugin_the_fork_types_are_named(tmp_path, capsys):
    p = tmp_path / "fork.prototxt"
    p.write_text('input: "x" input_shape { dim: 1 dim: 6 dim: 2 dim: 2 }\n'
                 'layer { name: "s" type: "MyFancyShuffle" bottom: "x" top: "y" fancy_param { group: 3 } }\n')
    assert main([str(p), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "layer 's' (MyFancyShuffle): 'MyFancyShuffle' is not a standard BVLC Caffe layer type" in err


@pytest.mark.shared
def test_plugin_makes_the_net_build(plugin, capsys):
    import json

    assert main([str(SHUFFLENET), "--plugin", str(plugin), "--json"]) == 0
    captured = capsys.readouterr()
    net = json.loads(captured.out)
    dw = next(l for l in net["layers"] if l["name"] == "resx1_conv2")
    assert dw["type"] == "ConvolutionDepthwise"  # built in (fillers/layers/forks/mobile.py)
    assert dw["params"] == [[54, 1, 3, 3]]
    assert net["blobs"]["fc1000"][:2] == [1, 1000]
    assert net["blobs"]["shuffle2"] == net["blobs"]["resx2_conv1"]
    # the plugin consumes shuffle_channel_param: no "ignoring field" warning for it
    assert "shuffle_channel_param" not in captured.err


@pytest.mark.shared
def test_fork_fields_reach_the_layer_parsed(plugin):
    from fillers.net import load

    load_plugin(str(plugin))
    net = load(SHUFFLENET)
    shuffle = net.layer("shuffle2")
    assert shuffle.spec.fork("shuffle_channel_param") == {"group": 3}
    assert shuffle.spec.fork_fields == {"shuffle_channel_param": "{\n    group: 3\n  }"}
    assert net.layer("resx1_conv2").spec.fork_fields == {}
    assert not any("'shuffle_channel_param'" in w for w in net.warnings)


def test_unconsumed_fork_field_warns_consumed_does_not(tmp_path, registry):
    from fillers.layers import LayerType, register
    from fillers.net import load

    @register("Gain")
    class Gain(LayerType):
        fork_params = {"gain_param": None}

    net_text = ('input: "x" input_shape { dim: 1 dim: 2 }\n'
                'layer { name: "g" type: "Gain" bottom: "x" top: "y" gain_param { g: 2 } }\n'
                'layer { name: "r" type: "ReLU" bottom: "y" top: "y" relu_param { cap: 6 } }\n')
    path = tmp_path / "n.prototxt"
    path.write_text(net_text)
    net = load(path)
    assert net.layer("g").spec.fork("gain_param") == {"g": 2}
    assert [w for w in net.warnings if "ignoring field" in w] == [
        f"{path}:3:66: ignoring field 'cap' (ReLUParameter; value 6), which BVLC Caffe does not have"]


def test_fork_params_as_a_protobuf_message(tmp_path, registry):
    """A type may name a generated message class: the block is parsed as that message."""
    from fillers import caffe_pb2
    from fillers.errors import NetError
    from fillers.layers import LayerType, register
    from fillers.net import load

    @register("Scaled")
    class Scaled(LayerType):
        fork_params = {"scaled_param": caffe_pb2.PowerParameter}

        def outputs(self, bottoms):
            p = self.fork("scaled_param")
            return [tuple(int(d * p.scale) for d in bottoms[0])]

    path = tmp_path / "n.prototxt"
    path.write_text('input: "x" input_shape { dim: 2 dim: 3 }\n'
                    'layer { name: "s" type: "Scaled" bottom: "x" top: "y" scaled_param { scale: 2 } }\n')
    assert load(path).blobs["y"] == (4, 6)
    path.write_text('input: "x" input_shape { dim: 2 dim: 3 }\n'
                    'layer { name: "s" type: "Scaled" bottom: "x" top: "y" scaled_param { zoom: 2 } }\n')
    with pytest.raises(NetError, match=r"layer 's' \(Scaled\): cannot read the fork field scaled_param as "
                                       r"PowerParameter"):
        load(path)


def test_base_docstring_example_works_as_written(tmp_path, registry):
    """The plugin example in fillers/layers/base.py's docstring: shapes and ONNX export."""
    doc = base.__doc__
    block = doc.split("this example is tested\n(``tests/test_plugins.py``)::\n", 1)[1].split("\nShapes are", 1)[0]
    code = textwrap.dedent(block)
    path = tmp_path / "upsample_plugin.py"
    path.write_text(code)
    load_plugin(str(path))
    from fillers.net import load

    prototxt = tmp_path / "up.prototxt"
    prototxt.write_text('input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 4 }\n'
                        'layer { name: "up" type: "UpsampleNearest" bottom: "x" top: "y" '
                        'upsample_param { scale: 3 } }\n')
    net = load(prototxt)
    assert net.blobs["y"] == (1, 2, 9, 12)
    assert not net.warnings
    from fillers.onnx import export, ort_session

    model = export(net.fill(seed=0))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 3, 4)).astype(np.float32)
    (y,) = ort_session(model).run(["y"], {"x": x})
    assert np.array_equal(y, x.repeat(3, axis=2).repeat(3, axis=3))


@pytest.mark.shared
def test_broken_plugin_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert main([str(SHUFFLENET), "--plugin", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fill-net: error: cannot load plugin '{bad}': RuntimeError: boom"]


def test_registering_a_type_twice_is_refused():
    from fillers.layers import register, LayerType

    with pytest.raises(ValueError, match="layer type 'ReLU' is already registered"):
        @register("ReLU")
        class Mine(LayerType):
            pass


def test_list_layers_shows_origin(plugin, capsys):
    assert main(["--list-layers"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Convolution\s+BVLC$", out, re.M)
    assert re.search(r"^PriorBox\s+weiliu89/caffe", out, re.M)
    assert main(["--plugin", str(plugin), "--list-layers"]) == 0
    assert re.search(r"^ShuffleChannel\s+my plugin$", capsys.readouterr().out, re.M)


NEW_TYPE = textwrap.dedent('''
    """A new layer type in one file: weights that --filler fills, a shape rule, a lowering."""
    from fillers.layers import BIAS, WEIGHT, LayerType, register


    @register("ChannelAffine")
    class ChannelAffine(LayerType):
        """y = w[c] * x + b[c] over axis 1; weights [C, 1], bias [C]."""

        origin = "tests/test_plugins.py"
        roles = {"weights": WEIGHT, "bias": BIAS}

        def params(self, bottoms):
            c = int(bottoms[0][1])
            return [self.blob("weights", (c, 1), {"type": "constant", "value": 1.0}),
                    self.blob("bias", (c,), {"type": "constant"})]

        def outputs(self, bottoms):
            if len(bottoms[0]) < 2:
                self.fail("needs a channel axis")
            return [tuple(bottoms[0])]

        def lower(self, ctx):
            shape = ctx.bottom_shapes[0]
            view = (shape[1],) + (1,) * (len(shape) - 2)
            y = ctx.node("Mul", [ctx.inputs[0], ctx.param(0, view)])
            ctx.node("Add", [y, ctx.param(1, view)], ctx.outputs[0])
''')


def test_a_new_type_with_weights_is_one_file(tmp_path, registry, capsys):
    """Adding a layer type touches one file: --filler/--bias-filler fill its blobs (by the
    roles it declares), --help lists them, the export lowers it and the check runs it."""
    plugin = tmp_path / "channel_affine.py"
    plugin.write_text(NEW_TYPE)
    net_path = tmp_path / "net.prototxt"
    net_path.write_text('input: "x" input_shape { dim: 2 dim: 64 dim: 3 dim: 3 }\n'
                        'layer { name: "aff" type: "ChannelAffine" bottom: "x" top: "y" }\n')
    npz, onnx_path = tmp_path / "w.npz", tmp_path / "w.onnx"
    assert main([str(net_path), "--plugin", str(plugin), "--filler", "gaussian:std=2", "--bias-filler",
                 "constant:value=0.5", "--seed", "1", "--npz", str(npz), "--no-caffemodel",
                 "--onnx", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "result: ok" in out and "gaussian(0,2)" in out
    base._REGISTRY.pop("ChannelAffine")  # --help in a fresh process: the plugin loads before the parser
    w, b = np.load(npz)["aff/0"], np.load(npz)["aff/1"]
    assert w.shape == (64, 1) and 1.5 < w.std() < 2.5 and (b == 0.5).all()
    from fillers.onnx import ort_session

    x = np.random.default_rng(0).standard_normal((2, 64, 3, 3)).astype(np.float32)
    (y,) = ort_session(str(onnx_path)).run(["y"], {"x": x})
    assert np.allclose(y, x * w.reshape(1, 64, 1, 1) + b.reshape(1, 64, 1, 1), atol=1e-6)
    with pytest.raises(SystemExit):
        main(["--plugin", str(plugin), "--help"])
    assert any(l.split()[:1] == ["ChannelAffine"] and "weights" in l for l in capsys.readouterr().out.splitlines())
