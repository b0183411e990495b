#!/usr/bin/env python
"""Build a small Keras CNN and convert it to ONNX with tf2onnx.

Needs tensorflow + tf2onnx, which are NOT project dependencies; use a separate venv:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx
    /tmp/tfvenv/bin/python models/make_tf2onnx_model.py -o models/keras_cnn_tf2onnx.onnx

The network (NHWC input 32x32x3, dynamic batch): Conv3x3(16)+ReLU ->
Conv3x3(16, no bias)+BN+ReLU -> Conv3x3/2(32)+ReLU -> DepthwiseConv3x3+BN+ReLU ->
Conv1x1(32)+ReLU -> GlobalAveragePooling -> Dense(10). Random weights with a fixed
seed; biases and BN gamma/beta/moving statistics are randomised (not 0/1).
Also writes models/ref/<name>.npz (random NHWC input and the Keras output).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def build_model(seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, 3), name="input")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv3")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dwconv")(x)
    x = layers.BatchNormalization(name="bn_dw")(x)
    x = layers.ReLU(name="relu_dw")(x)
    x = layers.Conv2D(32, 1, activation="relu", name="pwconv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, out, name="keras_cnn")

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype(np.float32),  # gamma
                    rng.normal(0, 0.1, c).astype(np.float32),  # beta
                    rng.normal(0, 0.2, c).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 2.0, c).astype(np.float32),  # moving variance
                ]
            )
        elif getattr(layer, "use_bias", False):  # Keras inits biases to 0: randomise them
            w = layer.get_weights()
            w[-1] = rng.normal(0, 0.05, w[-1].shape).astype(np.float32)
            layer.set_weights(w)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default=os.path.join(HERE, "keras_cnn_tf2onnx.onnx"))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ref", action="store_true")
    a = p.parse_args(argv)

    import tensorflow as tf
    import tf2onnx

    model = build_model(a.seed)
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def serve(x):
        return {"logits": model(x, training=False)}

    onnx_model, _ = tf2onnx.convert.from_function(
        serve, input_signature=spec, opset=a.opset, output_path=a.output
    )
    print(
        f"wrote {a.output} (tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}, "
        f"opset {a.opset})"
    )
    x = np.random.default_rng(a.seed + 1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    y = model(x, training=False).numpy()
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(a.output, providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
        print(f"max|ort-keras| = {np.abs(got - y).max():.2e}")
    except ImportError:
        pass
    if not a.no_ref:
        stem = os.path.basename(a.output)[: -len(".onnx")]
        os.makedirs(os.path.join(HERE, "ref"), exist_ok=True)
        ref = os.path.join(HERE, "ref", stem + ".npz")
        np.savez_compressed(ref, input=x, output=y)
        print(f"wrote {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
