"""The model zoo: the networks of the source documents, all for 1 x 28 x 28 inputs.

Each class carries ``input_shape`` so a space can build example inputs without being told.
"""

from typing import List

from torch import nn

from moprune.registry import Registry

MODELS = Registry("model")


class MnistCNN(nn.Module):
    """Document 000's CNN: conv 32 (5x5) -> conv 64 (5x5) -> fc 1024 -> fc 10.

    ReLU and 2x2 max-pooling follow each convolution; 13,883,904 MACs and 3,274,634 params.
    """

    input_shape = (1, 28, 28)

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class LeNet5(nn.Module):
    """Classic LeNet-5 (6-16-120-84-10) with 61,470 weights (biases excluded), as in document 002."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


class LeNet5Caffe(nn.Module):
    """Caffe's LeNet-5 (20-50-500-10): 431,080 params, 2,293,000 MACs; the published pruning baseline."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def _conv_bn(in_channels, out_channels, stride=1, kernel_size=3):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class VGGSmall(nn.Module):
    """A VGG-style stack with BatchNorm for 28x28 inputs: 32-32-M-64-64-M-128-M, fc 256, fc 10."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes=10):
        super().__init__()
        layers, in_channels = [], 1
        for width in (32, 32, "M", 64, 64, "M", 128, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*_conv_bn(in_channels, width), nn.ReLU()]
                in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut added before the ReLU."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.branch = nn.Sequential(
            *_conv_bn(in_channels, out_channels, stride), nn.ReLU(), *_conv_bn(out_channels, out_channels)
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _conv_bn(in_channels, out_channels, stride, kernel_size=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.branch(x) + self.shortcut(x))


class ResNet8(nn.Module):
    """ResNet-8: a 16-channel stem and three basic blocks (16, 32, 64), global pooling, fc 10.

    The additions couple channels across layers: the dependency-aware case for pruning.
    """

    input_shape = (1, 28, 28)

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16), nn.ReLU())
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


MODELS.register("mnist_cnn")(MnistCNN)
MODELS.register("lenet5")(LeNet5)
MODELS.register("lenet5_caffe")(LeNet5Caffe)
MODELS.register("vgg_small")(VGGSmall)
MODELS.register("resnet8")(ResNet8)


def model_names() -> List[str]:
    """Names accepted by :func:`get_model`."""
    return MODELS.names()


def get_model(name: str, *, num_classes: int = 10) -> nn.Module:
    """Build an untrained zoo model by name.

    Args:
        name: One of :func:`model_names` (``"mnist_cnn"``, ``"lenet5"``, ``"lenet5_caffe"``,
            ``"vgg_small"``, ``"resnet8"``).
        num_classes: Size of the classifier output.

    Raises:
        MopruneValueError: unknown name (the message lists the choices).
    """
    return MODELS.get(name)(num_classes=num_classes)
