"""Embedding models and a small timm-style registry.

Every model maps a batch of inputs to L2-normalised embeddings of shape ``(n, dim)``
and exposes ``.dim``. ``create_model(..., seed=s)`` draws the initial weights from a
private random stream seeded with ``s`` (torch's global generator is saved and restored
around the construction, so the caller's random state is untouched); without ``seed``
the weights come from torch's global generator.

>>> model = create_model("cnn", input_shape=(1, 28, 28), dim=64, seed=0, width=32)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bclviz._validate import check_positive_int
from bclviz.external import FROZEN_KINDS, TORCHVISION_PREFIX

__all__ = [
    "MLPEmbedder",
    "SmallCNN",
    "ResNetEmbedder",
    "register_model",
    "list_models",
    "create_model",
    "check_model_name",
    "InputView",
    "BlockAverage",
]

ResNetArch = Literal["resnet18", "resnet50"]
_RESNET_ARCHS = ("resnet18", "resnet50")
_SMALL_INPUT_MAX = 32  # inputs up to this many pixels use the CIFAR-style ResNet stem


class MLPEmbedder(nn.Module):
    """Fully connected embedder: ``depth`` hidden layers of ``hidden`` units with ReLU.

    Parameters
    ----------
    in_dim : number of input features; inputs of any shape ``(n, ...)`` are flattened.
    dim : embedding dimension.
    hidden : width of the hidden layers.
    depth : number of hidden layers (>= 1).

    Forward: ``(n, ...)`` with ``in_dim`` values per row -> ``(n, dim)``, unit norm.
    """

    def __init__(self, in_dim: int, dim: int, *, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.dim = check_positive_int(dim, "dim")
        hidden = check_positive_int(hidden, "hidden")
        depth = check_positive_int(depth, "depth")
        layers: list[nn.Module] = []
        width = self.in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, self.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"expected {self.in_dim} input features per row, got {x.shape[1]}")
        return F.normalize(self.net(x), dim=1)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks (BatchNorm, ReLU) and a linear head.

    Channels are ``width, 2 * width, 2 * width``; after each of the first two blocks a
    2x2 max-pool halves the resolution when ``input_size >= 8`` (one pool when
    ``4 <= input_size < 8``). An adaptive average pool to 2x2 then makes the head
    independent of the input size, so 8x8 digits and 28x28 Fashion-MNIST both work.

    Parameters
    ----------
    in_channels : input channels.
    dim : embedding dimension.
    width : channels of the first block; sets capacity (e.g. 16 old, 64 new).
    input_size : side length of the inputs the network is built for (sets pooling).

    Forward: ``(n, in_channels, H, W)`` -> ``(n, dim)``, unit norm. BatchNorm means
    ``model.eval()`` is needed for batch-independent outputs.
    """

    def __init__(
        self, in_channels: int, dim: int, *, width: int = 32, input_size: int = 28
    ) -> None:
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        self.dim = check_positive_int(dim, "dim")
        width = check_positive_int(width, "width")
        input_size = check_positive_int(input_size, "input_size")
        n_pool = 2 if input_size >= 8 else (1 if input_size >= 4 else 0)
        layers = _conv_block(in_channels, width)
        layers += [nn.MaxPool2d(2)] if n_pool >= 1 else []
        layers += _conv_block(width, 2 * width)
        layers += [nn.MaxPool2d(2)] if n_pool >= 2 else []
        layers += _conv_block(2 * width, 2 * width)
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width * 4, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(x)), dim=1)


class ResNetEmbedder(nn.Module):
    """A torchvision ResNet whose classifier is replaced by a linear map to ``dim``.

    Parameters
    ----------
    arch : "resnet18" or "resnet50".
    dim : embedding dimension.
    in_channels : input channels; when not 3, ``conv1`` is replaced (randomly
        initialised, also when ``weights`` are given).
    weights : passed to the torchvision constructor (e.g. ``"IMAGENET1K_V1"``);
        ``None`` (default) means random initialisation and no download. Pretrained
        weights download through torchvision on first use.
    small_input : use the CIFAR-style stem (3x3 stride-1 ``conv1``, no max-pool) for
        small images. ``None`` decides from ``input_size``: small when it is given and
        at most 32 pixels, else the ImageNet stem.
    input_size : side length of the inputs, only used when ``small_input`` is None.

    Forward: ``(n, in_channels, H, W)`` -> ``(n, dim)``, unit norm.
    """

    def __init__(
        self,
        arch: ResNetArch,
        dim: int,
        *,
        in_channels: int = 3,
        weights=None,
        small_input: bool | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if arch not in _RESNET_ARCHS:
            raise ValueError(f"arch must be one of {_RESNET_ARCHS}, got {arch!r}")
        self.dim = check_positive_int(dim, "dim")
        in_channels = check_positive_int(in_channels, "in_channels")
        if small_input is None:
            small_input = input_size is not None and input_size <= _SMALL_INPUT_MAX
        import torchvision.models

        net = getattr(torchvision.models, arch)(weights=weights)
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        net.fc = nn.Linear(net.fc.in_features, self.dim)
        self.arch = arch
        self.small_input = bool(small_input)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


# ----------------------------------------------------------------------------- registry
ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(*, input_shape, dim, **kwargs) -> nn.Module``.

    Raises ``ValueError`` when ``name`` is already registered.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        if name.startswith(TORCHVISION_PREFIX) or name in FROZEN_KINDS:
            raise ValueError(f"model names {TORCHVISION_PREFIX!r}<arch> and {list(FROZEN_KINDS)} are reserved, "
                             f"got {name!r}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted (besides ``torchvision:<arch>``)."""
    return sorted(_REGISTRY)


_OTHER_NAMES = (f"'{TORCHVISION_PREFIX}<arch>' (any torchvision classification model, bclviz.external) or, for "
                f"the old model only, {' / '.join(repr(k) for k in FROZEN_KINDS)} (a frozen model file)")


def check_model_name(name: str, *, where: str, frozen_ok: bool = False) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``name`` is a registered model,
    ``torchvision:<arch>`` or (with ``frozen_ok``, for an old model) a frozen file kind."""
    if not isinstance(name, str):
        raise ValueError(f"{where} must be one of {list_models()} or {_OTHER_NAMES}; got {name!r}")
    if name in _REGISTRY:
        return
    if name.startswith(TORCHVISION_PREFIX):
        from .external import torchvision_arch

        try:
            torchvision_arch(name)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        return
    if name in FROZEN_KINDS:
        if frozen_ok:
            return
        raise ValueError(f"{where} is {name!r}, a frozen model file, which can only be the old model (it is "
                         f"loaded, never trained); the new model must be one of {list_models()} or "
                         f"'{TORCHVISION_PREFIX}<arch>'")
    raise ValueError(f"{where} must be one of {list_models()} or {_OTHER_NAMES}; got {name!r}")


def _factory(name: str) -> ModelFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        from .external import torchvision_arch

        return _torchvision_factory(torchvision_arch(name))
    if name in FROZEN_KINDS:
        raise ValueError(f"model {name!r} is a frozen model file: load it with bclviz.external.load_frozen_model "
                         "(an old model's ModelSpec does so), it is not built")
    raise ValueError(f"unknown model {name!r}; choose one of {list_models()}, or {_OTHER_NAMES}")


def create_model(name: str, *, input_shape: tuple[int, ...], dim: int, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model for inputs of shape ``input_shape`` (one sample).

    Parameters
    ----------
    name : one of :func:`list_models` (``"cnn"``, ``"mlp"``, ``"resnet18"``,
        ``"resnet50"``), or ``"torchvision:<arch>"`` for any torchvision classification
        architecture (:class:`bclviz.external.TorchvisionEmbedder`).
    input_shape : shape of one input, e.g. ``(64,)`` or ``(1, 28, 28)``; gives
        ``in_dim`` (MLP) or ``in_channels`` and ``input_size`` (CNN, ResNet).
    dim : embedding dimension.
    seed : seed of the initial weights; ``None`` draws them from torch's global generator.
    **kwargs : passed to the model's constructor (e.g. ``width=64``, ``hidden=256``,
        ``weights="resnet18.pth"``).
    """
    factory = _factory(name)
    shape = tuple(input_shape)
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}"
        )
    shape = tuple(int(s) for s in shape)
    if seed is None:
        return factory(input_shape=shape, dim=dim, **kwargs)
    # Layer constructors initialise from the global generator and take no generator, so
    # the construction runs on a forked stream seeded with `seed`.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(input_shape=shape, dim=dim, **kwargs)


class InputView(nn.Module):
    """The old model behind a fixed degraded view of its input (``BCLData.old_view``).

    ``view`` is a (D, D) matrix applied to flattened inputs (the toy's coarse view), or
    a module that maps a batch to a batch of the same shape (e.g. :class:`BlockAverage`,
    for images too large for a D x D matrix).
    """

    def __init__(self, view: torch.Tensor | nn.Module, inner: nn.Module) -> None:
        super().__init__()
        self.matrix = not isinstance(view, nn.Module)
        if self.matrix:
            self.register_buffer("view", view.clone())
        else:
            self.transform = view
        self.inner = inner
        self.dim = inner.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.matrix:
            return self.inner(self.transform(x))
        shape = x.shape
        return self.inner((x.reshape(shape[0], -1) @ self.view.T).reshape(shape))


class BlockAverage(nn.Module):
    """A low-resolution view of images: each ``factor x factor`` pixel block replaced by
    its mean (average pooling, then nearest upsampling back to the input size).

    The old model of the ``lowres-old`` scenario sees this: the image of a camera with
    ``factor`` times fewer pixels per side, shown at the same size so that old and new
    models share one architecture. It is linear (a (D, D) matrix would do the same) but
    costs O(D) per image, so it also serves 224 x 224 benchmark images.

    Forward: ``(n, c, h, w)`` with ``h`` and ``w`` multiples of ``factor`` -> same shape.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = check_positive_int(factor, "factor")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"BlockAverage({self.factor}) needs images (n, c, h, w) with h and w multiples of "
                             f"{self.factor}, got shape {tuple(x.shape)}")
        pooled = F.avg_pool2d(x, self.factor)
        return pooled.repeat_interleave(self.factor, dim=2).repeat_interleave(self.factor, dim=3)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs input_shape (channels, height, width), got {input_shape}"
        )
    return input_shape[0], min(input_shape[1:])


@register_model("mlp")
def _mlp(*, input_shape: tuple[int, ...], dim: int, **kwargs) -> MLPEmbedder:
    return MLPEmbedder(int(np.prod(input_shape)), dim, **kwargs)


@register_model("cnn")
def _cnn(*, input_shape: tuple[int, ...], dim: int, **kwargs) -> SmallCNN:
    channels, size = _image_shape("cnn", input_shape)
    return SmallCNN(channels, dim, input_size=size, **kwargs)


@register_model("resnet18")
def _resnet18(*, input_shape: tuple[int, ...], dim: int, **kwargs) -> ResNetEmbedder:
    channels, size = _image_shape("resnet18", input_shape)
    return ResNetEmbedder("resnet18", dim, in_channels=channels, input_size=size, **kwargs)


@register_model("resnet50")
def _resnet50(*, input_shape: tuple[int, ...], dim: int, **kwargs) -> ResNetEmbedder:
    channels, size = _image_shape("resnet50", input_shape)
    return ResNetEmbedder("resnet50", dim, in_channels=channels, input_size=size, **kwargs)


def _torchvision_factory(arch: str) -> ModelFactory:
    def factory(*, input_shape: tuple[int, ...], dim: int, **kwargs) -> nn.Module:
        from .external import TorchvisionEmbedder

        _image_shape(f"{TORCHVISION_PREFIX}{arch}", input_shape)
        return TorchvisionEmbedder(arch, dim, input_shape=input_shape, **kwargs)

    return factory
