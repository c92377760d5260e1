"""Models from outside bclviz's registry: any torchvision classifier, or a frozen old model file.

Two forms of :class:`~bclviz.config.ModelSpec` name a model bclviz does not define:

- ``torchvision:<arch>``: any classification architecture of
  ``torchvision.models.list_models(module=torchvision.models)`` (``resnet18``,
  ``mobilenet_v3_small``, ``convnext_tiny``, ``vit_b_16``, ...), built by
  ``torchvision.models.get_model(arch, weights=None)`` with its classifier replaced by a
  linear projection to ``dim`` (:class:`TorchvisionEmbedder`). ``options.weights`` loads
  a local state dict (torchvision's key names, e.g. ``torch.save(model.state_dict(),
  path)``), or a torchvision weights name (``ResNet18_Weights.IMAGENET1K_V1``,
  ``IMAGENET1K_V1``, ``DEFAULT``) whose file is already in torch's hub cache: bclviz
  never downloads. Old or new model, it is trained like every registered model.
- ``torchscript`` / ``export`` with ``options.path``: a frozen old model saved with
  ``torch.jit.save`` or ``torch.export.save`` (:class:`FrozenEmbedder`,
  :func:`load_frozen_model`). It is the old model only: it is loaded, put in eval mode and
  never trained, its output dimension must be ``old_model.dim`` (the new model's), and its
  file's sha256 identifies it wherever a run keys on the old model (the new model's
  checkpoint, ``bclviz extract``'s folder, the trial keys of sweeps, ``bclviz tune`` and
  the lab, where a torchvision ``weights`` file is also named by its sha256). Load only files you trust: TorchScript and
  exported programs run the code they hold.

Nothing here imports torchvision until a torchvision model is asked for.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_positive_int

__all__ = [
    "TORCHVISION_PREFIX", "FROZEN_KINDS", "torchvision_archs", "torchvision_arch", "TorchvisionEmbedder",
    "FrozenEmbedder", "load_frozen_model", "file_sha256",
]

#: model names of this form are torchvision architectures
TORCHVISION_PREFIX = "torchvision:"
#: model names of frozen old-model files, and what saves each
FROZEN_KINDS = {"torchscript": "torch.jit.save", "export": "torch.export.save"}
#: architectures whose auxiliary classifiers are switched off (their forward returns a tuple in training)
_AUX_LOGITS = ("googlenet", "inception_v3")
_WEIGHTS_NAME = re.compile(r"(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*")


# ----------------------------------------------------------------------------- torchvision
def torchvision_archs() -> list[str]:
    """The classification architectures ``torchvision:<arch>`` accepts, sorted."""
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_arch(name: str) -> str:
    """The architecture of a ``torchvision:<arch>`` model name; ``ValueError`` for an unknown one."""
    arch = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    archs = torchvision_archs()
    if arch not in archs:
        raise ValueError(f"unknown torchvision architecture {arch!r} in model name {name!r}; "
                         f"torchvision's classification models: {archs}")
    return arch


class _RepeatChannel(nn.Module):
    """``(n, 1, h, w)`` -> ``(n, 3, h, w)``: a grayscale image as the RGB image a torchvision model expects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


class _Resize(nn.Module):
    """Bilinear resize of ``(n, c, h, w)`` images to ``size``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _size_pair(resize, where: str) -> tuple[int, int]:
    pair = [resize, resize] if isinstance(resize, int) and not isinstance(resize, bool) else resize
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pair):
        raise ValueError(f"{where}: resize must be a positive side or [height, width], got {resize!r}")
    return int(pair[0]), int(pair[1])


def _classifier_path(net: nn.Module, num_classes: int) -> str:
    """Name of the last Linear / Conv2d with ``num_classes`` outputs: the classifier."""
    found = [name for name, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    if not found:
        raise ValueError(f"found no classifier layer with {num_classes} outputs in {type(net).__name__}")
    return found[-1]


def _read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, pickled code
        raise ValueError(f"{where}: weights file {path} cannot be read as a state dict "
                         f"(torch.load with weights_only=True): {err}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint holding the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: weights file {path} holds a {type(state).__name__}, not a state dict of "
                         "tensors; save one with torch.save(model.state_dict(), path)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _hub_weights(arch: str, name: str, where: str) -> tuple[Path, str]:
    """(cached file, member name) of torchvision weights ``name`` of ``arch``; never downloads."""
    import torchvision.models

    enum = torchvision.models.get_model_weights(arch)
    cls, _, member = name.rpartition(".")
    if cls and cls != enum.__name__:
        raise ValueError(f"{where}: weights {name!r} are not weights of {arch} ({enum.__name__})")
    try:
        weights = enum[member]
    except KeyError:
        raise ValueError(f"{where}: unknown weights {name!r} for {arch}; choose one of "
                         f"{[w.name for w in enum]} or give a local state dict file") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file():
        raise FileNotFoundError(
            f"{where}: torchvision weights {enum.__name__}.{weights.name} are not in torch's hub cache ({cached}); "
            "bclviz never downloads them. Fetch them once where there is internet "
            f"(python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='{weights.name}')\"), "
            "copy that file there, or give a local state dict: weights: /path/to/state_dict.pth")
    return cached, f"{enum.__name__}.{weights.name}"


def _load_weights(net: nn.Module, head: str, weights, arch: str, where: str) -> str:
    """Load ``weights`` into ``net`` (its classifier ``head`` already removed); returns what was loaded."""
    text = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else None
    if text is None:
        raise ValueError(f"{where}: weights must be a file path or a torchvision weights name, got {weights!r}")
    path = Path(text).expanduser()
    if not path.is_file() and _WEIGHTS_NAME.fullmatch(text):
        path, text = _hub_weights(arch, text, where)
    elif not path.is_file():
        raise FileNotFoundError(f"{where}: weights file {path} does not exist")
    state = _read_state_dict(path, where)
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{where}: weights file {path} does not fit the architecture: "
                         f"{' '.join(str(err).split())}") from None
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        raise ValueError(f"{where}: weights file {path} does not fit the architecture: missing keys "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    return text


class TorchvisionEmbedder(nn.Module):
    """A torchvision classification model whose classifier is replaced by a linear map to ``dim``.

    Parameters
    ----------
    arch : a name of :func:`torchvision_archs`.
    dim : embedding dimension.
    input_shape : ``(channels, height, width)`` of the inputs; one channel is repeated
        into three (so ImageNet weights apply to grayscale images unchanged), any other
        count but three goes through a learned 1x1 convolution to three channels.
    weights : ``None`` (random initialisation), a local state dict file, or a
        torchvision weights name found in torch's hub cache (see the module docstring).
        Every entry but the classifier's must fit the architecture; the classifier's are
        dropped, since the projection to ``dim`` replaces it.
    resize : side or ``(height, width)`` the inputs are resized to (bilinear) before the
        network; ``None`` (default) feeds them as they are. Architectures with a fixed
        input size (ViT: 224) or a minimum one (SqueezeNet: about 20 pixels, Inception v3:
        75) need it for small images; building the model names the option when the input
        is too small.
    **builder_options : passed to ``torchvision.models.get_model`` (e.g. ``width_mult=0.5``
        for MobileNet, ``image_size=32`` for ViT); not ``num_classes``.

    Forward: ``(n, channels, height, width)`` -> ``(n, dim)``, unit norm. :meth:`features`
    gives the network's own features before the projection.
    """

    def __init__(self, arch: str, dim: int, *, input_shape: tuple[int, int, int], weights=None, resize=None,
                 **builder_options) -> None:
        super().__init__()
        import torchvision.models

        arch = torchvision_arch(arch)
        where = f"model '{TORCHVISION_PREFIX}{arch}'"
        self.dim = check_positive_int(dim, "dim")
        if "num_classes" in builder_options:
            raise ValueError(f"{where}: num_classes is not an option: the classifier is replaced by a projection "
                             "to dim")
        channels = input_shape[0]
        self.adapt = (nn.Identity() if channels == 3 else _RepeatChannel() if channels == 1
                      else nn.Conv2d(channels, 3, 1))
        self.resize = nn.Identity() if resize is None else _Resize(_size_pair(resize, where))
        if arch in _AUX_LOGITS:
            builder_options = {"aux_logits": False, "init_weights": True, **builder_options}
        try:
            net = torchvision.models.get_model(arch, weights=None, **builder_options)
        except TypeError as err:
            raise ValueError(f"{where}: option(s) {sorted(builder_options)} not accepted by torchvision: "
                             f"{err}") from None
        head = _classifier_path(net, 1000)
        net.set_submodule(head, nn.Identity())
        self.arch, self.weights = arch, None
        if weights is not None:
            self.weights = _load_weights(net, head, weights, arch, where)
        self.net = net
        shape = (2, 3, *(self.resize.size if resize is not None else input_shape[1:]))
        net.eval()
        try:
            with torch.no_grad():
                feats = torch.flatten(net(torch.zeros(shape)), 1)
        except Exception as err:  # the input is too small for the architecture, or of the wrong size
            raise ValueError(f"{where} cannot take inputs of shape {tuple(input_shape)} ({err}); set "
                             "options.resize to a size it accepts, e.g. resize: 64 (224 for ViT)") from None
        finally:
            net.train()
        self.proj = nn.Linear(feats.shape[1], self.dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network's features before the projection, ``(n, features)``."""
        return torch.flatten(self.net(self.resize(self.adapt(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(x)), dim=1)


# ----------------------------------------------------------------------------- frozen files
def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _archive_kind(path: Path) -> str:
    """``"torchscript"``, ``"export"``, ``"torch.save"`` or ``"other"``: what wrote the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "other"
    if any(n.endswith("/archive_format") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "torch.save" if any(n.endswith("/data.pkl") for n in names) else "other"


def _check_kind(kind: str, path: Path) -> None:
    found = _archive_kind(path)
    if found == kind:
        return
    saver = FROZEN_KINDS[kind]
    if found in FROZEN_KINDS:
        hint = f"it was written by {FROZEN_KINDS[found]}: use name: {found}"
    elif found == "torch.save":
        hint = ("it was written by torch.save (a state dict or a pickled module): a state dict belongs in "
                "options.weights of a torchvision:<arch> model; save a frozen model with "
                f"{saver}")
    else:
        hint = f"save the old model with {saver}"
    raise ValueError(f"old model file {path} was not written by {saver} (name: {kind}); {hint}")


def _load_module(kind: str, path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            if kind == "torchscript":
                return torch.jit.load(str(path), map_location="cpu").eval()
            with open(path, "rb") as fh:  # a file object: any suffix, not only .pt2
                return torch.export.load(fh).module()
    except Exception as err:
        raise ValueError(f"old model file {path} cannot be loaded with {kind}: {err}") from None


class FrozenEmbedder(nn.Module):
    """A frozen old model loaded from a file (:func:`load_frozen_model`); never trained.

    Its parameters do not require gradients and ``train()`` leaves the loaded module in
    the mode it was saved in (eval mode: exported programs cannot change mode).
    ``fingerprint`` (kind and file sha256) identifies it in checkpoints and caches; a
    pickled copy (e.g. sent to a trial worker) reloads the file and checks the hash.

    Forward: the file's module, then L2 normalisation: ``(n, *input_shape)`` -> ``(n, dim)``.
    """

    def __init__(self, module: nn.Module, *, kind: str, path: Path, sha256: str, dim: int,
                 input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner = module
        for p in module.parameters():
            p.requires_grad_(False)
        self.register_buffer("_device", torch.zeros(0), persistent=False)  # follows .to(device)
        self.kind, self.path, self.sha256, self.dim, self.input_shape = kind, path, sha256, dim, tuple(input_shape)
        self.training = False

    @property
    def fingerprint(self) -> dict:
        """``{"kind": ..., "sha256": ...}``: the old model's identity (the file's path may change)."""
        return {"kind": self.kind, "sha256": self.sha256}

    def train(self, mode: bool = True) -> "FrozenEmbedder":
        return self  # frozen: stays as loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != self.dim:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"old model file {self.path} returned {got}; expected (n, {self.dim})")
        return F.normalize(out.float(), dim=1)

    def __reduce__(self):
        return _reload, (self.kind, str(self.path), self.dim, self.input_shape, self.sha256, str(self._device.device))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, path={str(self.path)!r}, dim={self.dim}, sha256={self.sha256[:12]}"


def load_frozen_model(kind: str, path: str | os.PathLike, *, dim: int, input_shape: tuple[int, ...]) -> FrozenEmbedder:
    """Load a frozen old model saved with ``torch.jit.save`` (``kind="torchscript"``) or
    ``torch.export.save`` (``kind="export"``), on the CPU, and check it on the data's inputs.

    A batch of 2 and one of 3 zero inputs of ``input_shape`` must give ``(n, dim)``
    outputs (so a program exported with a fixed batch size is refused here, not halfway
    through training: export with ``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file of
    another kind, one that does not load, or outputs of the wrong shape.
    """
    if kind not in FROZEN_KINDS:
        raise ValueError(f"kind must be one of {list(FROZEN_KINDS)}, got {kind!r}")
    dim = check_positive_int(dim, "dim")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"old model file {path} does not exist (old_model.options.path)")
    _check_kind(kind, path)
    sha256 = file_sha256(path)
    module = _load_module(kind, path)
    for n in (2, 3):
        shape = (n, *input_shape)
        try:
            with torch.no_grad():
                out = module(torch.zeros(shape))
        except Exception as err:
            hint = (" A torch.export program needs a dynamic batch dimension: export it with "
                    "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}." if kind == "export" and n == 3 else "")
            raise ValueError(f"old model file {path} fails on a batch of shape {shape} (the data's inputs): "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}.{hint}") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, dim):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"old model file {path} outputs {got} for inputs of shape {shape}; expected ({n}, {dim}): "
                             "old_model.dim must be the file's embedding dimension, equal to new_model.dim")
    return FrozenEmbedder(module, kind=kind, path=path, sha256=sha256, dim=dim, input_shape=input_shape)


def _reload(kind: str, path: str, dim: int, input_shape: tuple[int, ...], sha256: str, device: str) -> FrozenEmbedder:
    model = load_frozen_model(kind, path, dim=dim, input_shape=input_shape)
    if model.sha256 != sha256:
        raise ValueError(f"old model file {path} changed while in use (sha256 {model.sha256[:12]}, "
                         f"expected {sha256[:12]})")
    return model.to(device)
