"""Reference models written by hand in plain PyTorch, as an expert would (torchvision's layout).

torchvision itself cannot be installed beside the CPU torch wheel used here, so
the benchmark compares against these; their parameter counts equal torchvision's.
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        x = self.conv1(torch.relu(self.norm1(x)))
        return self.conv2(torch.relu(self.norm2(x)))


class DenseNet121(nn.Module):
    def __init__(self, classes=1000, growth=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages, c = nn.ModuleList(), 64        # dense blocks (ModuleList) and transitions, in order
        for i, n in enumerate((6, 12, 24, 16)):
            self.stages.append(nn.ModuleList(DenseLayer(c + k * growth, growth) for k in range(n)))
            c += n * growth
            if i < 3:
                self.stages.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                                 nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)))
                c //= 2
        self.norm = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            if isinstance(stage, nn.ModuleList):
                features = [x]
                for layer in stage:
                    features.append(layer(features))
                x = torch.cat(features, 1)
            else:
                x = stage(x)
        x = torch.relu(self.norm(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _vgg_stage(cin, cout, convs, first_pad=1):
    layers = []
    for k in range(convs):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=first_pad if k == 0 else 1),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2, 2, ceil_mode=True))


class FCN8s(nn.Module):
    """FCN-8s as in the reference Caffe model, with `width` and `fc` to shrink it."""

    def __init__(self, classes=21, width=64, fc=4096):
        super().__init__()
        w = width
        self.pool1 = _vgg_stage(3, w, 2, first_pad=100)
        self.pool2 = _vgg_stage(w, 2 * w, 2)
        self.pool3 = _vgg_stage(2 * w, 4 * w, 3)
        self.pool4 = _vgg_stage(4 * w, 8 * w, 3)
        self.pool5 = _vgg_stage(8 * w, 8 * w, 3)
        self.fc6 = nn.Sequential(nn.Conv2d(8 * w, fc, 7), nn.ReLU(inplace=True), nn.Dropout2d())
        self.fc7 = nn.Sequential(nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout2d())
        self.score_fr = nn.Conv2d(fc, classes, 1)
        self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, 2, bias=False)
        self.score_pool4 = nn.Conv2d(8 * w, classes, 1)
        self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, 2, bias=False)
        self.score_pool3 = nn.Conv2d(4 * w, classes, 1)
        self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, 8, bias=False)

    @staticmethod
    def _crop(x, like, offset):
        return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]

    def forward(self, image):
        pool3 = self.pool3(self.pool2(self.pool1(image)))
        pool4 = self.pool4(pool3)
        up2 = self.upscore2(self.score_fr(self.fc7(self.fc6(self.pool5(pool4)))))
        fuse4 = up2 + self._crop(self.score_pool4(pool4), up2, 5)
        up4 = self.upscore_pool4(fuse4)
        fuse3 = up4 + self._crop(self.score_pool3(pool3), up4, 9)
        return self._crop(self.upscore8(fuse3), image, 31)
