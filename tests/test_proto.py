"""Tests for the Caffe protobuf schema (proto/caffe.proto -> fillers/caffe_pb2.py).

The schema must stay wire- and text-format-compatible with BVLC Caffe master
(9b891540); these tests pin enough of it that an accidental rename,
renumbering or default change is caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow running without an installed package
    sys.path.insert(0, str(REPO_ROOT))

from fillers import caffe_pb2  # noqa: E402

GEN_SCRIPT = REPO_ROOT / "tools" / "gen_proto.py"


# --------------------------------------------------------------------------
# (a) generated module is in sync with proto/caffe.proto
# --------------------------------------------------------------------------


def _run_check(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        cwd=script.parent.parent,
    )


def test_generated_module_is_up_to_date():
    result = _run_check(GEN_SCRIPT)
    assert result.returncode == 0, (
        "fillers/caffe_pb2.py is stale; run `python tools/gen_proto.py`\n"
        + result.stdout
        + result.stderr
    )


def test_check_detects_stale_module(tmp_path):
    # Copy the generator, schema and generated module into a scratch tree,
    # corrupt the generated module and make sure --check notices.
    (tmp_path / "tools").mkdir()
    (tmp_path / "proto").mkdir()
    (tmp_path / "fillers").mkdir()
    shutil.copy(GEN_SCRIPT, tmp_path / "tools" / "gen_proto.py")
    shutil.copy(REPO_ROOT / "proto" / "caffe.proto", tmp_path / "proto")
    stale = (REPO_ROOT / "fillers" / "caffe_pb2.py").read_text() + "\n# stale\n"
    (tmp_path / "fillers" / "caffe_pb2.py").write_text(stale)

    result = _run_check(tmp_path / "tools" / "gen_proto.py")
    assert result.returncode == 1
    assert len(result.stdout.strip().splitlines()) == 1
    assert "out of date" in result.stdout


# --------------------------------------------------------------------------
# (b) spot checks
# --------------------------------------------------------------------------


def _field(message: str, name: str) -> FieldDescriptor:
    return getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[name]


def test_layer_parameter_convolution_param_number():
    assert _field("LayerParameter", "convolution_param").number == 106


def test_pooling_round_mode():
    f = _field("PoolingParameter", "round_mode")
    assert f.number == 13
    assert f.enum_type.full_name == "caffe.PoolingParameter.RoundMode"
    assert caffe_pb2.PoolingParameter.CEIL == 0
    assert caffe_pb2.PoolingParameter.FLOOR == 1
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL


def test_clip_and_swish_exist():
    assert _field("LayerParameter", "clip_param").message_type.name == "ClipParameter"
    assert _field("LayerParameter", "swish_param").message_type.name == "SwishParameter"
    # Caffe declares both clip bounds as `required`.
    assert _field("ClipParameter", "min").is_required
    assert _field("ClipParameter", "max").is_required
    assert caffe_pb2.SwishParameter().beta == 1.0


def test_filler_parameter_defaults():
    f = caffe_pb2.FillerParameter()
    assert f.type == "constant"
    assert f.value == 0.0
    assert f.min == 0.0
    assert f.max == 1.0
    assert f.mean == 0.0
    assert f.std == 1.0
    assert f.sparse == -1
    assert f.variance_norm == caffe_pb2.FillerParameter.FAN_IN
    assert caffe_pb2.FillerParameter.FAN_IN == 0
    assert caffe_pb2.FillerParameter.FAN_OUT == 1
    assert caffe_pb2.FillerParameter.AVERAGE == 2


def test_misc_defaults():
    assert caffe_pb2.ConvolutionParameter().bias_term is True
    assert caffe_pb2.ConvolutionParameter().group == 1
    assert caffe_pb2.InnerProductParameter().axis == 1
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.SolverParameter().solver_mode == caffe_pb2.SolverParameter.GPU
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.SolverParameter().random_seed == -1
    assert caffe_pb2.BatchNormParameter().moving_average_fraction == pytest.approx(0.999)
    assert caffe_pb2.BatchNormParameter().eps == pytest.approx(1e-5)
    assert caffe_pb2.LRNParameter().beta == pytest.approx(0.75)
    assert caffe_pb2.WindowDataParameter().crop_mode == "warp"
    assert caffe_pb2.ParamSpec().lr_mult == 1.0


def test_v1_layer_type_enum():
    lt = caffe_pb2.V1LayerParameter.LayerType
    assert lt.Value("CONVOLUTION") == 4
    assert lt.Value("NONE") == 0
    assert lt.Value("DECONVOLUTION") == 39
    assert lt.Value("ABSVAL") == 35
    assert lt.Value("THRESHOLD") == 31
    assert len(lt.keys()) == 40


def test_top_level_phase_enum():
    assert caffe_pb2.TRAIN == 0
    assert caffe_pb2.TEST == 1


def test_parse_v1_text_net():
    text = """
    name: "old"
    input: "data"
    input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers {
      name: "conv1"
      type: CONVOLUTION
      bottom: "data"
      top: "conv1"
      blobs_lr: 1
      blobs_lr: 2
      convolution_param { num_output: 4 kernel_size: 3 }
    }
    """
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    assert len(net.layers) == 1
    layer = net.layers[0]
    assert layer.type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert list(layer.blobs_lr) == [1.0, 2.0]
    assert layer.convolution_param.num_output == 4
    assert list(layer.convolution_param.kernel_size) == [3]
    assert list(net.input_dim) == [1, 3, 8, 8]


def test_parse_v2_text_net_with_input_shape():
    text = """
    name: "new"
    input: "data"
    input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
    layer {
      name: "pool1"
      type: "Pooling"
      bottom: "data"
      top: "pool1"
      include { phase: TEST }
      pooling_param { pool: AVE kernel_size: 2 stride: 2 round_mode: FLOOR }
    }
    layer {
      name: "clip"
      type: "Clip"
      bottom: "pool1"
      top: "clip"
      clip_param { min: -1 max: 1 }
    }
    """
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    assert list(net.input_shape[0].dim) == [1, 3, 32, 32]
    assert len(net.layer) == 2
    pool = net.layer[0].pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE
    assert pool.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert net.layer[0].include[0].phase == caffe_pb2.TEST
    assert net.layer[1].clip_param.min == -1.0
    # Round-trip through the wire format.
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net


def test_blob_data_is_packed_on_the_wire():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2])
    blob.data.extend([1.0, 2.0])
    raw = blob.SerializeToString()
    # Field 5, wire type 2 (length-delimited) => tag byte 0x2a, then 8 bytes.
    assert bytes([0x2A, 0x08]) in raw
    # BlobShape.dim (field 1) also packed: 0x0a <len> <varint 2>.
    assert bytes([0x3A, 0x03, 0x0A, 0x01, 0x02]) in raw


def test_packed_fields_are_exactly_caffes():
    packed = set()
    for msg in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        for f in msg.fields:
            if f.GetOptions().HasField("packed") and f.GetOptions().packed:
                packed.add(f"{msg.name}.{f.name}")
    assert packed == {
        "BlobShape.dim",
        "BlobProto.data",
        "BlobProto.diff",
        "BlobProto.double_data",
        "BlobProto.double_diff",
    }


# --------------------------------------------------------------------------
# (c) compact table of field numbers across the whole schema
# --------------------------------------------------------------------------

FIELD_NUMBERS = [
    ("BlobShape", "dim", 1),
    ("BlobProto", "shape", 7),
    ("BlobProto", "double_data", 8),
    ("BlobProto", "num", 1),
    ("BlobProtoVector", "blobs", 1),
    ("Datum", "float_data", 6),
    ("Datum", "encoded", 7),
    ("FillerParameter", "sparse", 7),
    ("FillerParameter", "variance_norm", 8),
    ("NetParameter", "input", 3),
    ("NetParameter", "input_shape", 8),
    ("NetParameter", "input_dim", 4),
    ("NetParameter", "layer", 100),
    ("NetParameter", "layers", 2),
    ("SolverParameter", "net", 24),
    ("SolverParameter", "test_initialization", 32),
    ("SolverParameter", "snapshot_format", 37),
    ("SolverParameter", "type", 40),
    ("SolverParameter", "layer_wise_reduce", 41),
    ("SolverParameter", "weights", 42),
    ("SolverState", "current_step", 4),
    ("NetState", "stage", 3),
    ("NetStateRule", "not_stage", 5),
    ("ParamSpec", "share_mode", 2),
    ("ParamSpec", "decay_mult", 4),
    ("LayerParameter", "phase", 10),
    ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "loss_param", 101),
    ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "scale_param", 142),
    ("LayerParameter", "input_param", 143),
    ("LayerParameter", "recurrent_param", 146),
    ("LayerParameter", "swish_param", 147),
    ("LayerParameter", "clip_param", 148),
    ("LayerParameter", "prelu_param", 131),
    ("LayerParameter", "window_data_param", 129),
    ("TransformationParameter", "force_gray", 7),
    ("LossParameter", "normalization", 3),
    ("LossParameter", "normalize", 2),
    ("ConcatParameter", "concat_dim", 1),
    ("ConvolutionParameter", "stride", 6),
    ("ConvolutionParameter", "weight_filler", 7),
    ("ConvolutionParameter", "dilation", 18),
    ("ConvolutionParameter", "force_nd_im2col", 17),
    ("DataParameter", "prefetch", 10),
    ("DummyDataParameter", "shape", 6),
    ("EmbedParameter", "input_dim", 2),
    ("ImageDataParameter", "root_folder", 12),
    ("InnerProductParameter", "transpose", 6),
    ("LRNParameter", "k", 5),
    ("PoolingParameter", "global_pooling", 12),
    ("ScaleParameter", "bias_filler", 5),
    ("SliceParameter", "axis", 3),
    ("SPPParameter", "engine", 6),
    ("WindowDataParameter", "root_folder", 13),
    ("PReLUParameter", "channel_shared", 2),
    ("V1LayerParameter", "layer", 1),
    ("V1LayerParameter", "include", 32),
    ("V1LayerParameter", "param", 1001),
    ("V1LayerParameter", "blob_share_mode", 1002),
    ("V1LayerParameter", "convolution_param", 10),
    ("V1LayerParameter", "loss_param", 42),
    ("V0LayerParameter", "k", 22),
    ("V0LayerParameter", "det_context_pad", 58),
    ("V0LayerParameter", "hdf5_output_param", 1001),
]


@pytest.mark.parametrize(("message", "field", "number"), FIELD_NUMBERS)
def test_field_numbers(message, field, number):
    assert _field(message, field).number == number


def test_schema_size():
    # Totals of BVLC master's caffe.proto; a dropped or added field shows here.
    messages = list(caffe_pb2.DESCRIPTOR.message_types_by_name.values())
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert len(messages) == 63
    assert sum(len(m.fields) for m in messages) == 423
    enums = list(caffe_pb2.DESCRIPTOR.enum_types_by_name.values())
    for m in messages:
        enums.extend(m.enum_types)
    assert len(enums) == 26
    assert sum(len(e.values) for e in enums) == 111
