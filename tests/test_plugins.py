"""Fork layer types as plugins: registered with the same decorator as the built-in types,
loaded by --plugin."""

import textwrap

import pytest

from conftest import CORPUS
from fillers.cli import main
from fillers.layers import base

pytestmark = pytest.mark.shared

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
        """Reorders channels in `group` groups; the shape is unchanged.  Its parameter
        message is a fork field, read from the layer's fork_fields."""

        def outputs(self, bottoms):
            text = self.fork_fields["shuffle_channel_param"]  # the text of "{ group: 3 }"
            group = int(text.split("group:")[1].split()[0].rstrip("}"))
            if bottoms[0][1] % group:
                self.fail(f"{bottoms[0][1]} channels cannot be shuffled in {group} groups")
            return [tuple(bottoms[0])]
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
    assert net["blobs"]["shuffle2"] == net["blobs"]["resx2_conv1"]


def test_fork_fields_reach_the_layer(plugin):
    from fillers.cli import load_plugin
    from fillers.net import load

    load_plugin(str(plugin))
    net = load(SHUFFLENET)
    shuffle = net.layer("shuffle2")
    assert shuffle.spec.fork_fields == {"shuffle_channel_param": "{\n    group: 3\n  }"}
    assert net.layer("resx1_conv2").spec.fork_fields == {}
    assert any("'shuffle_channel_param'" in w for w in net.warnings)


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
