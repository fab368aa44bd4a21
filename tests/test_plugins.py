"""Fork layer types as plugins: registered with the same decorator as the built-in types,
loaded by --plugin."""

import textwrap

import pytest

from conftest import CORPUS
from fillers.cli import main
from fillers.layers import base

SHUFFLENET = CORPUS / "farmingyard__ShuffleNet/shufflenet_1x_g3_deploy.prototxt"

PLUGIN = textwrap.dedent('''
    from fillers.layers import LayerType, register
    from fillers.layers.conv import Convolution


    @register("ConvolutionDepthwise")
    class ConvolutionDepthwise(Convolution):
        """The fork's depthwise convolution: a Convolution with one group per input channel."""

        def _setup(self, bottoms):
            self.lp.convolution_param.group = int(bottoms[0][1])
            return super()._setup(bottoms)


    @register("ShuffleChannel")
    class ShuffleChannel(LayerType):
        """Reorders channels; the shape is unchanged."""
''')


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "fork_layers.py"
    path.write_text(PLUGIN)
    saved = dict(base._REGISTRY)
    yield path
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


def test_without_plugin_the_fork_types_are_named(capsys):
    assert main([str(SHUFFLENET), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "(ConvolutionDepthwise)" in err and "ShuffleChannel" in err


def test_plugin_makes_the_net_build(plugin, capsys):
    import json

    assert main([str(SHUFFLENET), "--plugin", str(plugin), "--json"]) == 0
    net = json.loads(capsys.readouterr().out)
    dw = next(l for l in net["layers"] if l["name"] == "resx1_conv2")
    assert dw["type"] == "ConvolutionDepthwise"
    assert dw["params"] == [[54, 1, 3, 3]]
    assert net["blobs"]["fc1000"][:2] == [1, 1000]


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
