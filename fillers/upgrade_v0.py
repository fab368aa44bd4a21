"""Caffe's oldest net format, V0, upgraded to V1 as Caffe's ``upgrade_proto.cpp`` does.

A V0 net is a list of ``layers { layer { name type num_output kernelsize ... } bottom top }``
(a ``V1LayerParameter`` whose only content is its bottoms, tops and a nested
``V0LayerParameter``), with lower-case type names (``conv``, ``pool``, ``innerproduct``...)
and a separate ``padding`` layer in front of convolutions.  Caffe reads it in two steps,
reproduced here:

1. ``UpgradeV0PaddingLayers``: every ``padding`` layer is dropped; the convolution or
   pooling layer that reads its top takes its ``pad`` and reads the padding layer's bottom
   instead (Caffe aborts when anything else reads a padding layer, or when the padding or
   the reading layer has more than one bottom or top).
2. ``UpgradeV0Net`` / ``UpgradeV0LayerParameter``: each layer becomes a V1 layer: the type
   from ``UpgradeV0LayerType`` (an unknown type aborts), the V0 fields moved into the
   ``*_param`` message of that type.  A field that does not belong to the type is dropped
   with Caffe's "Unknown parameter" message (Caffe logs it and goes on).  Only the net's
   ``name``, ``input``, ``input_dim`` and ``force_backward`` are kept.

The result is a V1 ``NetParameter``; :func:`fillers.prototxt.upgrade_v1` takes it on to V2.
"""

from __future__ import annotations

from . import caffe_pb2
from .errors import ParseError

V1 = caffe_pb2.V1LayerParameter

#: UpgradeV0LayerType: V0 type string -> V1 enum value
V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V0 field -> {V0 type: (V1 sub-message, field, how)}; how: "set" (scalar), "add"
# (repeated), "copy" (message).  The order is Caffe's (it decides the order of the
# "Unknown parameter" messages only).
_MOVES = [
    ("num_output", {"conv": ("convolution_param", "num_output", "set"),
                    "innerproduct": ("inner_product_param", "num_output", "set")}),
    ("biasterm", {"conv": ("convolution_param", "bias_term", "set"),
                  "innerproduct": ("inner_product_param", "bias_term", "set")}),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler", "copy"),
                       "innerproduct": ("inner_product_param", "weight_filler", "copy")}),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler", "copy"),
                     "innerproduct": ("inner_product_param", "bias_filler", "copy")}),
    ("pad", {"conv": ("convolution_param", "pad", "add"), "pool": ("pooling_param", "pad", "set")}),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size", "add"),
                    "pool": ("pooling_param", "kernel_size", "set")}),
    ("group", {"conv": ("convolution_param", "group", "set")}),
    ("stride", {"conv": ("convolution_param", "stride", "add"), "pool": ("pooling_param", "stride", "set")}),
    ("pool", {"pool": ("pooling_param", "pool", "set")}),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio", "set")}),
    ("local_size", {"lrn": ("lrn_param", "local_size", "set")}),
    ("alpha", {"lrn": ("lrn_param", "alpha", "set")}),
    ("beta", {"lrn": ("lrn_param", "beta", "set")}),
    ("k", {"lrn": ("lrn_param", "k", "set")}),
    ("source", {"data": ("data_param", "source", "set"), "hdf5_data": ("hdf5_data_param", "source", "set"),
                "images": ("image_data_param", "source", "set"),
                "window_data": ("window_data_param", "source", "set"),
                "infogain_loss": ("infogain_loss_param", "source", "set")}),
    ("scale", None),  # transform_param.scale for every type
    ("meanfile", None),
    ("batchsize", {"data": ("data_param", "batch_size", "set"),
                   "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                   "images": ("image_data_param", "batch_size", "set"),
                   "window_data": ("window_data_param", "batch_size", "set")}),
    ("cropsize", None),
    ("mirror", None),
    ("rand_skip", {"data": ("data_param", "rand_skip", "set"),
                   "images": ("image_data_param", "rand_skip", "set")}),
    ("shuffle_images", {"images": ("image_data_param", "shuffle", "set")}),
    ("new_height", {"images": ("image_data_param", "new_height", "set")}),
    ("new_width", {"images": ("image_data_param", "new_width", "set")}),
    ("concat_dim", {"concat": ("concat_param", "concat_dim", "set")}),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold", "set")}),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold", "set")}),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction", "set")}),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad", "set")}),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode", "set")}),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None, "copy")}),
]

#: V0 fields that go to transform_param whatever the layer type
_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}


def needs_v0_upgrade(net) -> bool:
    """Caffe's NetNeedsV0ToV1Upgrade: some ``layers {}`` entry holds a ``layer {}``."""
    return any(v1.HasField("layer") for v1 in net.layers)


def upgrade_v0(net, path, warnings: list | None = None):
    """A V0 ``NetParameter`` upgraded to V1 (Caffe's UpgradeV0Net).

    Returns ``(v1_net, kept)``: ``kept`` holds the indices (into ``net.layers``) of the
    layers that remain, in order (the padding layers are folded away).  Caffe's "Unknown
    parameter" messages are appended to ``warnings``; what Caffe aborts on raises
    :class:`ParseError`.
    """
    path = str(path)
    warnings = warnings if warnings is not None else []
    mixed = [v1.name or f"#{i + 1}" for i, v1 in enumerate(net.layers) if not v1.HasField("layer")]
    if mixed:
        raise ParseError(path, f"the file mixes V0 layers ('layers {{ layer {{ ... }} }}') with V1 layers "
                         f"({', '.join(mixed[:3])}{' ...' if len(mixed) > 3 else ''}); Caffe's V0 upgrade "
                         "would drop the V1 layers' names and types; use one format")
    padded, kept = _fold_padding(net, path)
    out = caffe_pb2.NetParameter()
    if net.HasField("name"):
        out.name = net.name
    for v1 in padded:
        _upgrade_layer(v1, out.layers.add(), path, warnings)
    out.input.extend(net.input)
    out.input_dim.extend(net.input_dim)
    if net.HasField("force_backward"):
        out.force_backward = net.force_backward
    return out, kept


def _fold_padding(net, path):
    """UpgradeV0PaddingLayers: the layers without their padding layers, each reader of a
    padding layer's top padded and rewired to the padding layer's bottom."""
    last_top = {name: -1 for name in net.input}
    out, kept = [], []
    for i, conn in enumerate(net.layers):
        lp = conn.layer
        if lp.type != "padding":
            copy = V1()
            copy.CopyFrom(conn)
            out.append(copy)
            kept.append(i)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise ParseError(path, f"layer '{lp.name}' reads the blob '{blob}', which no earlier layer "
                                 "or input produces")
            src_idx = last_top[blob]
            if src_idx == -1:
                continue
            src = net.layers[src_idx]
            if src.layer.type != "padding":
                continue
            if lp.type not in ("conv", "pool"):
                raise ParseError(path, f"layer '{lp.name}' ({lp.type}) reads the padding layer "
                                 f"'{src.layer.name}'; Caffe folds padding only into a conv or pool layer")
            if len(conn.bottom) != 1:
                raise ParseError(path, f"layer '{lp.name}' reads the padding layer '{src.layer.name}' and "
                                 "has more than one bottom; Caffe needs exactly one")
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise ParseError(path, f"padding layer '{src.layer.name}' needs exactly one bottom and one top")
            target = out[-1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return out, kept


def _upgrade_layer(conn, v1, path, warnings):
    """UpgradeV0LayerParameter."""
    v1.bottom.extend(conn.bottom)
    v1.top.extend(conn.top)
    v0 = conn.layer
    if v0.HasField("name"):
        v1.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_TYPES:
            raise ParseError(path, f"layer '{v0.name}' has the V0 type '{kind}', which Caffe's V0 upgrade does "
                             f"not know (it knows {', '.join(sorted(V0_TYPES))} and padding)")
        v1.type = V0_TYPES[kind]
    for b in v0.blobs:
        v1.blobs.add().CopyFrom(b)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for name, targets in _MOVES:
        if not v0.HasField(name):
            continue
        value = getattr(v0, name)
        if targets is None:
            setattr(v1.transform_param, _TRANSFORM[name], value)
            continue
        if kind not in targets:
            warnings.append(f"{path}: layer '{v0.name}': Caffe's V0 upgrade drops the parameter {name}, "
                            f"unknown for layer type {kind}")
            continue
        sub, field, how = targets[kind]
        msg = getattr(v1, sub)
        if how == "set":
            setattr(msg, field, value)
        elif how == "add":
            getattr(msg, field).append(value)
        elif field is None:
            msg.CopyFrom(value)
        else:
            getattr(msg, field).CopyFrom(value)
