"""Keras zoo (random weights, seeded): a ResNet-style residual CNN, a MobileNetV2-style depthwise
CNN and a Transformer encoder block, exported through `spa.exporters.tf`.

    python -m models.keras_zoo NAME OUT.onnx [--opset N]

Run as a child process by models/framework_zoo.py (tensorflow and paddle cannot share a process).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

NAMES = ("resnet", "mobilenetv2", "transformer")


def _randomize_bn(model, seed: int = 0) -> None:
    """BatchNorm statistics of an untrained model are 0/1: give them values so folding matters."""
    import numpy as np
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


def resnet():
    import keras
    from keras import layers

    def block(x, width, stride):
        y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != width:
            x = layers.BatchNormalization()(layers.Conv2D(width, 1, strides=stride, use_bias=False)(x))
        return layers.ReLU()(layers.Add()([x, y]))

    inp = keras.Input((32, 32, 3), name="image")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    x = block(x, 16, 1)
    x = block(x, 32, 2)
    x = block(x, 32, 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x), name="resnet")


def mobilenetv2():
    import keras
    from keras import layers

    def inverted(x, expand, out, stride):
        width = x.shape[-1]
        y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(width * expand, 1, use_bias=False)(x)))
        y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)
        y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(out, 1, use_bias=False)(y))
        return layers.Add()([x, y]) if stride == 1 and width == out else y

    inp = keras.Input((32, 32, 3), name="image")
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same",
                                                                   use_bias=False)(inp)))
    x = inverted(x, 4, 16, 1)
    x = inverted(x, 4, 24, 2)
    x = inverted(x, 4, 24, 1)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(64, 1, use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x), name="mobilenetv2")


def transformer():
    import keras
    from keras import layers

    dim, heads, seq = 64, 4, 16
    inp = keras.Input((seq, dim), name="tokens")
    att = layers.MultiHeadAttention(num_heads=heads, key_dim=dim // heads)(inp, inp)
    x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([inp, att]))
    # tanh GELU: tf2onnx writes exact GELU with Erfc, which ONNX lacks
    y = layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(layers.Dense(dim * 4)(x))
    y = layers.Dense(dim)(y)
    x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, y]))
    return keras.Model(inp, layers.Dense(10)(layers.GlobalAveragePooling1D()(x)), name="transformer")


def build(name: str):
    import keras

    if name not in NAMES:
        raise SystemExit(f"unknown Keras zoo model '{name}' (one of {', '.join(NAMES)})")
    keras.utils.set_random_seed(0)
    model = globals()[name]()
    _randomize_bn(model)
    return model


def main(argv=None) -> int:
    from models.framework_zoo import export_cli
    from spa.exporters.tf import export

    def export_one(name, output, opset):
        export(build(name), output, opset=opset)

    return export_cli(__doc__, NAMES, export_one, argv)


if __name__ == "__main__":
    sys.exit(main())
