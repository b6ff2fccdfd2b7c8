"""Flax (nnx) zoo (random weights, seeded): a residual CNN and an MLP-Mixer, exported through
`spa.exporters.jax`.

    python -m models.flax_zoo NAME OUT.onnx [--opset N]
"""
from __future__ import annotations

import sys

NAMES = ("cnn", "mixer")
INPUTS = {"cnn": [("image", [2, 32, 32, 3])], "mixer": [("image", [2, 32, 32, 3])]}


def _modules():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def randomize_bn(bn, rngs):
        key = rngs.params()
        k1, k2, k3, k4 = jax.random.split(key, 4)
        n = bn.scale.value.shape
        bn.scale.value = jax.random.uniform(k1, n, minval=0.5, maxval=1.5)
        bn.bias.value = 0.1 * jax.random.normal(k2, n)
        bn.mean.value = 0.1 * jax.random.normal(k3, n)
        bn.var.value = jax.random.uniform(k4, n, minval=0.5, maxval=1.5)
        return bn

    class Block(nnx.Module):
        def __init__(self, cin, cout, stride, rngs):
            self.c1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
            self.b1 = randomize_bn(nnx.BatchNorm(cout, use_running_average=True, rngs=rngs), rngs)
            self.c2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
            self.b2 = randomize_bn(nnx.BatchNorm(cout, use_running_average=True, rngs=rngs), rngs)
            short = stride != 1 or cin != cout
            self.short = nnx.data(nnx.Conv(cin, cout, (1, 1), strides=stride, rngs=rngs) if short else None)

        def __call__(self, x):
            y = self.b2(self.c2(jax.nn.relu(self.b1(self.c1(x)))))
            return jax.nn.relu((x if self.short is None else self.short(x)) + y)

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 16, (3, 3), rngs=rngs)
            self.blocks = nnx.List([Block(16, 16, 1, rngs), Block(16, 32, 2, rngs), Block(32, 32, 1, rngs)])
            self.head = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x):
            x = jax.nn.relu(self.stem(x))
            for block in self.blocks:
                x = block(x)
            return self.head(jnp.mean(x, axis=(1, 2)))

    class MixerBlock(nnx.Module):
        def __init__(self, tokens, dim, rngs):
            self.n1 = nnx.LayerNorm(dim, rngs=rngs)
            self.t1 = nnx.Linear(tokens, tokens * 2, rngs=rngs)
            self.t2 = nnx.Linear(tokens * 2, tokens, rngs=rngs)
            self.n2 = nnx.LayerNorm(dim, rngs=rngs)
            self.c1 = nnx.Linear(dim, dim * 4, rngs=rngs)
            self.c2 = nnx.Linear(dim * 4, dim, rngs=rngs)

        def __call__(self, x):  # x: [batch, tokens, dim]
            y = jnp.swapaxes(self.n1(x), 1, 2)
            x = x + jnp.swapaxes(self.t2(jax.nn.gelu(self.t1(y))), 1, 2)
            return x + self.c2(jax.nn.gelu(self.c1(self.n2(x))))

    class Mixer(nnx.Module):
        def __init__(self, rngs, patch=8, dim=32):
            self.patch = nnx.Conv(3, dim, (patch, patch), strides=patch, rngs=rngs)
            self.blocks = nnx.List([MixerBlock(16, dim, rngs), MixerBlock(16, dim, rngs)])
            self.norm = nnx.LayerNorm(dim, rngs=rngs)
            self.head = nnx.Linear(dim, 10, rngs=rngs)

        def __call__(self, x):
            x = self.patch(x)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            for block in self.blocks:
                x = block(x)
            return self.head(jnp.mean(self.norm(x), axis=1))

    return {"cnn": CNN, "mixer": Mixer}


def build(name: str):
    from flax import nnx

    if name not in NAMES:
        raise SystemExit(f"unknown Flax zoo model '{name}' (one of {', '.join(NAMES)})")
    return _modules()[name](nnx.Rngs(0))


def cnn():
    """A zero-argument factory for `spa export ... models.flax_zoo:cnn`."""
    return build("cnn")


def mixer():
    """A zero-argument factory for `spa export ... models.flax_zoo:mixer`."""
    return build("mixer")


def main(argv=None) -> int:
    from models.framework_zoo import export_cli
    from spa.exporters.jax import export

    def export_one(name, output, opset):
        export(build(name), output, input_shapes=INPUTS[name], opset=opset)

    return export_cli(__doc__, NAMES, export_one, argv)


if __name__ == "__main__":
    sys.exit(main())
