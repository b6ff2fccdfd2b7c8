"""PaddlePaddle zoo (random weights, seeded): a ResNet-style CNN and a small PP-LCNet-like net
(depthwise separable convs, hardswish, squeeze-excitation), exported through `spa.exporters.paddle`.

    python -m models.paddle_zoo NAME OUT.onnx [--opset N]
"""
from __future__ import annotations

import sys

NAMES = ("resnet", "lcnet")
INPUTS = [("image", [-1, 3, 32, 32])]


def _layers():
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F

    def bn(channels):
        layer = nn.BatchNorm2D(channels)
        layer.weight.set_value(paddle.uniform([channels], min=0.5, max=1.5))
        layer.bias.set_value(paddle.normal(0.0, 0.1, [channels]))
        layer._mean.set_value(paddle.normal(0.0, 0.1, [channels]))
        layer._variance.set_value(paddle.uniform([channels], min=0.5, max=1.5))
        return layer

    class Basic(nn.Layer):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2D(cin, cout, 3, stride, 1, bias_attr=False), bn(cout)
            self.c2, self.b2 = nn.Conv2D(cout, cout, 3, 1, 1, bias_attr=False), bn(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2D(cin, cout, 1, stride, bias_attr=False), bn(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu((x if self.short is None else self.short(x)) + y)

    class ResNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2D(3, 16, 3, 1, 1, bias_attr=False), bn(16), nn.ReLU())
            self.blocks = nn.Sequential(Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 32, 1))
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class SE(nn.Layer):
        def __init__(self, channels):
            super().__init__()
            self.c1 = nn.Conv2D(channels, channels // 4, 1)
            self.c2 = nn.Conv2D(channels // 4, channels, 1)

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            return x * F.hardsigmoid(self.c2(F.relu(self.c1(s))))

    class DepthSep(nn.Layer):
        def __init__(self, cin, cout, stride, se=False):
            super().__init__()
            self.dw, self.b1 = nn.Conv2D(cin, cin, 3, stride, 1, groups=cin, bias_attr=False), bn(cin)
            self.se = SE(cin) if se else None
            self.pw, self.b2 = nn.Conv2D(cin, cout, 1, bias_attr=False), bn(cout)

        def forward(self, x):
            x = F.hardswish(self.b1(self.dw(x)))
            if self.se is not None:
                x = self.se(x)
            return F.hardswish(self.b2(self.pw(x)))

    class LCNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2D(3, 16, 3, 2, 1, bias_attr=False), bn(16), nn.Hardswish())
            self.blocks = nn.Sequential(DepthSep(16, 32, 1), DepthSep(32, 64, 2), DepthSep(64, 64, 1, se=True))
            self.last = nn.Conv2D(64, 128, 1)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
            x = F.hardswish(self.last(x))
            return self.fc(paddle.flatten(x, 1))

    return {"resnet": ResNet, "lcnet": LCNet}


def build(name: str):
    import paddle

    if name not in NAMES:
        raise SystemExit(f"unknown Paddle zoo model '{name}' (one of {', '.join(NAMES)})")
    paddle.seed(0)
    model = _layers()[name]()
    model.eval()
    return model


def resnet():
    """A zero-argument factory for `spa export ... models.paddle_zoo:resnet`."""
    return build("resnet")


def lcnet():
    """A zero-argument factory for `spa export ... models.paddle_zoo:lcnet`."""
    return build("lcnet")


def main(argv=None) -> int:
    from models.framework_zoo import export_cli
    from spa.exporters.paddle import export

    def export_one(name, output, opset):
        export(build(name), output, input_shapes=INPUTS, opset=opset)

    return export_cli(__doc__, NAMES, export_one, argv)


if __name__ == "__main__":
    sys.exit(main())
