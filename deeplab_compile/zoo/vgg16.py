"""torchvision's ImageNet VGG16 as DeepLab-LargeFOV's (and v2 VGG16's) initial weights.

DeepLab v1 (Chen et al., ICLR 2015, sec. 3.1 and 4.1) starts from ImageNet VGG16 with its
fully connected layers made convolutional and thinned: "we spatially subsample (by simple
decimation) the first FC layer to 4x4 (or 3x3) spatial size", and DeepLab-LargeFOV keeps
1024 of fc6's and fc7's 4096 channels (kernel 3x3, input stride 12, 1024 channels).  The
paper does not list the indices it kept, and DeepLab's released init.caffemodel comes
without the script that made it.  We take every 4th and every 3rd, from index 0 -- the
decimation the SSD reference (Liu et al. 2016, which "subsample[s] parameters from fc6 and
fc7" after DeepLab-LargeFOV) and its common PyTorch ports use:

* fc6 ``classifier.0`` (4096 x 25088 = 4096 x 512 x 7 x 7): filters ``0, 4, ..., 4092``
  (1024), rows and columns ``0, 3, 6`` of the 7 x 7 window -> 1024 x 512 x 3 x 3; bias
  ``0, 4, ..., 4092``.  The taps 0, 3, 6 sit 3 pool5 cells = 96 pixels apart at VGG16's
  stride 32, exactly the 12 x 8 = 96 pixels of LargeFOV's 3x3 at rate 12 on stride 8;
* fc7 ``classifier.3`` (4096 x 4096): outputs and inputs ``0, 4, ..., 4092`` -> 1024 x 1024
  x 1 x 1 (its inputs are fc6's outputs, decimated the same way); bias ``0, 4, ..., 4092``;
* fc8 ``classifier.6`` (the 1000 ImageNet classes) is dropped: fc8 is the task's own.

Input: torchvision's VGG16 reads RGB in [0, 1] normalised by ImageNet's mean and std;
DeepLab's VGG16 nets read Caffe's B G R in [0, 255] less ``mean_value`` (104.008, 116.669,
122.675), as every config under ``experiments/voc12`` feeds them.  conv1_1 is rewritten to
take DeepLab's input: its channels reversed and divided by 255 x std, the mean difference
moved into the bias.  On every pixel whose 3x3 window lies inside the image conv1_1 then
gives torchvision's conv1_1 on torchvision's input of the same image (the zero padding at
the border stands for slightly different pixels in the two conventions).
"""
from __future__ import annotations

from typing import Mapping

import torch

from .errors import ZooError

#: torchvision's ImageNet normalisation (torchvision/transforms/_presets.py, RGB).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
#: DeepLab's mean_value (B G R), from its train.prototxt and our experiments/voc12 configs.
DEEPLAB_MEAN_BGR = (104.008, 116.669, 122.675)

FILTER_STEP = 4      # 4096 -> 1024 channels
SPATIAL_STEP = 3     # 7 x 7 -> 3 x 3: rows/columns 0, 3, 6


def fc6_as_conv(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.reshape(weight.shape[0], 512, 7, 7)
    return (w[::FILTER_STEP, :, ::SPATIAL_STEP, ::SPATIAL_STEP].contiguous(),
            bias[::FILTER_STEP].contiguous())


def fc7_as_conv(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight[::FILTER_STEP, ::FILTER_STEP]
    return w.reshape(*w.shape, 1, 1).contiguous(), bias[::FILTER_STEP].contiguous()


def conv1_for_caffe_input(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """conv1_1 on torchvision's input -> conv1_1 on DeepLab's (B G R, [0, 255], less the mean)."""
    w = weight.double()
    std = torch.tensor(TORCHVISION_STD, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(TORCHVISION_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    caffe_mean_rgb = torch.tensor(DEEPLAB_MEAN_BGR[::-1], dtype=torch.float64).view(1, 3, 1, 1)
    scaled = w / (255.0 * std)                                   # per unit of a [0, 255] pixel
    b = bias.double() + (scaled * (caffe_mean_rgb - 255.0 * mean)).sum(dim=(1, 2, 3))
    return scaled.flip(1).to(weight.dtype).contiguous(), b.to(bias.dtype)


def to_deeplab(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's vgg16 state dict with fc6/fc7 made DeepLab's convolutions and
    conv1_1 made to read DeepLab's input; the keys stay torchvision's."""
    out = dict(sd)
    need = ("features.0.weight", "features.0.bias", "classifier.0.weight", "classifier.0.bias",
            "classifier.3.weight", "classifier.3.bias")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ZooError(f"the torchvision:vgg16 state dict lacks '{missing[0]}': is this torchvision's vgg16?")
    shapes = {"classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096),
              "features.0.weight": (64, 3, 3, 3)}
    for k, shape in shapes.items():
        if tuple(sd[k].shape) != shape:
                raise ZooError(f"'{k}' has shape {tuple(sd[k].shape)}, torchvision's vgg16 has {shape} "
                           "(vgg16_bn or another depth?)")
    out["features.0.weight"], out["features.0.bias"] = conv1_for_caffe_input(sd["features.0.weight"],
                                                                            sd["features.0.bias"])
    out["classifier.0.weight"], out["classifier.0.bias"] = fc6_as_conv(sd["classifier.0.weight"],
                                                                      sd["classifier.0.bias"])
    out["classifier.3.weight"], out["classifier.3.bias"] = fc7_as_conv(sd["classifier.3.weight"],
                                                                      sd["classifier.3.bias"])
    return out
