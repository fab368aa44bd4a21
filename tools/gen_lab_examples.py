"""Write the signal lab's example nets (fillers/examples/plain20_*.prototxt, rnn/lstm_t50):
plain deep nets that show how a filler carries the signal (run once; the files are committed).

    python tools/gen_lab_examples.py
"""

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fillers" / "examples"
DEPTH, WIDTH = 20, 16
INPUT = "layer { name: \"data\" type: \"Input\" top: \"data\"\n  input_param { shape { dim: 8 dim: 3 dim: 16 dim: 16 } } }\n"

PLAIN = {
    "plain20_relu_xavier": ("ReLU", 'weight_filler { type: "xavier" }', False,
                            "ReLU with xavier (Glorot): n_in Var(W) = 1 halves the variance at every ReLU"),
    "plain20_relu_msra": ("ReLU", 'weight_filler { type: "msra" }', False,
                          "ReLU with msra (He et al.): n_in Var(W) = 2 keeps the signal through ReLUs"),
    "plain20_relu_gauss": ("ReLU", 'weight_filler { type: "gaussian" std: 0.01 }', False,
                           "ReLU with gaussian std 0.01 (AlexNet's): the signal vanishes"),
    "plain20_tanh_xavier": ("TanH", 'weight_filler { type: "xavier" }', False,
                            "TanH with xavier: near-linear at the origin, the signal decays slowly"),
    "plain20_sigmoid_xavier": ("Sigmoid", 'weight_filler { type: "xavier" variance_norm: AVERAGE }', False,
                               "Sigmoid with xavier (AVERAGE): the non-zero mean piles up"),
    "plain20_bn_relu_gauss": ("ReLU", 'weight_filler { type: "gaussian" std: 0.01 }', True,
                              "BatchNorm (batch statistics) + Scale + ReLU after gaussian std 0.01: "
                              "normalization restores the signal"),
}


def plain(name, act, filler, bn, note):
    lines = [f"# {note}", f"# {DEPTH} convolutions of {WIDTH} channels (3x3, pad 1), global average pooling, "
             "a 10-way InnerProduct.", "# fill-net fillers/examples/%s.prototxt --report" % name, f'name: "{name}"',
             INPUT.rstrip()]
    bottom = "data"
    for i in range(1, DEPTH + 1):
        top = f"conv{i}"
        bias = "bias_term: false" if bn else 'bias_filler { type: "constant" value: 0 }'
        lines.append(f'layer {{ name: "{top}" type: "Convolution" bottom: "{bottom}" top: "{top}"\n'
                     f"  convolution_param {{ num_output: {WIDTH} kernel_size: 3 pad: 1 {bias}\n    {filler} }} }}")
        if bn:
            lines.append(f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "{top}" top: "{top}"\n'
                         "  batch_norm_param { use_global_stats: false } }")
            lines.append(f'layer {{ name: "scale{i}" type: "Scale" bottom: "{top}" top: "{top}" '
                         "scale_param { bias_term: true } }")
        lines.append(f'layer {{ name: "{act.lower()}{i}" type: "{act}" bottom: "{top}" top: "{top}" }}')
        bottom = top
    lines.append(f'layer {{ name: "pool" type: "Pooling" bottom: "{bottom}" top: "pool" '
                 "pooling_param { pool: AVE global_pooling: true } }")
    lines.append('layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"\n'
                 f"  inner_product_param {{ num_output: 10 {filler} }} }}")
    return "\n".join(lines) + "\n"


def recurrent(kind, steps=50):
    name = f"{kind.lower()}_t{steps}"
    return (f"# A {steps}-step {kind} (16 inputs, 32 units, xavier) whose only output is the last time step:\n"
            "# the gradient's norm w.r.t. each input step shows how far back it reaches.\n"
            f"# fill-net fillers/examples/{name}.prototxt --report\n"
            f'name: "{name}"\n'
            f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {steps} dim: 4 dim: 16 }} }} }}\n'
            f'layer {{ name: "cont" type: "Input" top: "cont" input_param {{ shape {{ dim: {steps} dim: 4 }} }} }}\n'
            f'layer {{ name: "{kind.lower()}" type: "{kind}" bottom: "x" bottom: "cont" top: "h"\n'
            '  recurrent_param { num_output: 32 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }\n'
            f'layer {{ name: "last" type: "Slice" bottom: "h" top: "h_early" top: "h_last" '
            f"slice_param {{ axis: 0 slice_point: {steps - 1} }} }}\n"
            'layer { name: "drop_early" type: "Silence" bottom: "h_early" }\n'), name


def main():
    for name, spec in PLAIN.items():
        (OUT / f"{name}.prototxt").write_text(plain(name, *spec))
    for kind in ("RNN", "LSTM"):
        text, name = recurrent(kind)
        (OUT / f"{name}.prototxt").write_text(text)


if __name__ == "__main__":
    main()
