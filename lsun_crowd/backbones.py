"""Built-in backbones, registered through the same hook a third-party plugin would use.

Torchvision backbones load pretrained weights as torchvision does: from the torch hub cache,
downloaded and checked there the first time (:mod:`lsun_crowd.weights`; never with
``[model] offline``), or from a weights file named in the config.
This module is loaded with every plugin manager, so torch and torchvision are imported only when
a torchvision backbone is built.

On CUDA a backbone runs channels-last under bf16 autocast (fp16 where the GPU lacks bf16), which
is how current GPUs run convolutions fastest; on the CPU it runs channels-last in float32.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lsun_crowd import weights as weights_module
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingError, EmbeddingModel, PixelBackbone, pick_device
from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import Backbone, RegisterBackbone

if TYPE_CHECKING:
    import torch
    import torchvision

TORCHVISION_BACKBONES = ("resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16")
HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_checkpoint_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps a downloaded copy of these weights."""
    return weights_module.cache_path(weights_url(weights))


def weights_url(weights: torchvision.models.WeightsEnum) -> str:
    """Where torchvision publishes these weights."""
    return str(weights.url)


def load_state_dict(
    architecture: str, weights_setting: str, offline: bool = False
) -> tuple[dict[str, Any] | None, str]:
    """The state dict named by the config, and a description of where it came from. A torchvision
    weights name or an http(s) URL is downloaded into torch's cache the first time, unless
    ``offline``."""
    import torchvision

    if weights_setting.lower() == "none":
        return None, "random initialisation"
    if urllib.parse.urlparse(weights_setting).scheme in ("http", "https"):
        path = weights_module.fetch(weights_setting, offline_setting=offline)
        return weights_module.load(path), str(path)
    candidate = Path(weights_setting).expanduser()
    if candidate.suffix in {".pth", ".pt"} or candidate.is_file():
        if not candidate.is_file():
            raise EmbeddingError(f"model.weights: file {candidate} does not exist")
        return weights_module.load(candidate), str(candidate)
    try:
        weights = torchvision.models.get_model_weights(architecture)[weights_setting]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in torchvision.models.get_model_weights(architecture))])
        raise EmbeddingError(
            f"model.weights: {weights_setting!r} is not a weights file, a URL or one of {names}"
        ) from None
    path = weights_module.fetch(weights_url(weights), offline_setting=offline, what=f"model.weights ({weights})")
    return weights_module.load(path), str(path)


class TorchvisionBackbone:
    """A torchvision classifier with its head removed; the pooled features are the embedding."""

    def __init__(self, architecture: str, config: ModelConfig) -> None:
        import torch
        import torchvision
        from torchvision.transforms import v2

        self.device = pick_device(config.device)
        network = torchvision.models.get_model(architecture, weights=None)
        state_dict, self.weights_source = load_state_dict(architecture, config.weights, config.offline)
        if state_dict is not None:
            network.load_state_dict(state_dict)
        else:
            warnings.warn(f"{architecture}: no pretrained weights; embeddings will be weak", stacklevel=2)
        for attribute in HEAD_ATTRIBUTES:
            if hasattr(network, attribute):
                setattr(network, attribute, torch.nn.Identity())
                break
        self.network = network.eval().to(self.device, memory_format=torch.channels_last)
        # The same steps on a CPU tensor from Pillow (in the loader's workers) and on a uint8
        # tensor that the GPU decoded.
        self.prepare_tensor = v2.Compose(
            [
                v2.Resize(config.image_size, antialias=True),
                v2.CenterCrop(config.image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.prepare = v2.Compose([v2.PILToTensor(), self.prepare_tensor])
        probe = self.embed_prepared(torch.zeros(1, 3, config.image_size, config.image_size))
        self.dim = int(probe.shape[1])
        self.key = f"{architecture}-{config.weights}-{config.image_size}"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def embed_prepared(self, batch: torch.Tensor) -> NDArray[np.float32]:
        """Vectors of a stacked batch of prepared images (pinned, when it comes from the loader)."""
        import torch

        with torch.inference_mode(), self._autocast():
            inputs = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            features = self.network(inputs).flatten(1)
        return np.asarray(features.float().cpu().numpy(), dtype=np.float32)

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_prepared(torch.stack([self.prepare(image.convert("RGB")) for image in images]))


def _torchvision_factory(architecture: str) -> Callable[[ModelConfig], EmbeddingModel]:
    return lambda config: TorchvisionBackbone(architecture, config)


@hookimpl
def register_backbones(register: RegisterBackbone) -> None:
    register(Backbone("pixels", "grayscale thumbnail pixels, for tiny images", PixelBackbone))
    for architecture in TORCHVISION_BACKBONES:
        register(
            Backbone(architecture, f"torchvision {architecture}, pooled features", _torchvision_factory(architecture))
        )
