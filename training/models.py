"""Models for federated simulation: a small MLP for digits and a name registry.

Any ``torch.nn.Module`` works with the rest of :mod:`training`; the registry only
names the built-in ones for the CLI and config files. Initial weights come from an
explicit ``torch.Generator`` seeded from the run seed — never torch's global RNG —
so a run is reproducible and no other code's draws shift it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from secagg.errors import ParameterError

DEFAULT_HIDDEN = 128


class MLP(nn.Module):
    """Flatten → Linear → ReLU → … → Linear. No BatchNorm, so DP-SGD can wrap it."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (DEFAULT_HIDDEN,)
    ):
        super().__init__()
        if in_features < 1 or num_classes < 2 or any(h < 1 for h in hidden):
            raise ParameterError(
                f"MLP sizes must be positive with ≥ 2 classes; got in_features={in_features}, "
                f"num_classes={num_classes}, hidden={hidden}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            # meta device: construction draws nothing from torch's global RNG
            layers += [nn.Linear(width, h, device="meta"), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes, device="meta"))
        self.net = nn.Sequential(*layers)
        self.to_empty(device="cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_linear_layers(module: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """(Re)initialize every ``nn.Linear`` like torch's default, but from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features else 0.0
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return module


ModelFactory = Callable[[int, int], nn.Module]

MODELS: dict[str, ModelFactory] = {
    "mlp": lambda in_features, num_classes: MLP(in_features, num_classes),
    "mlp-small": lambda in_features, num_classes: MLP(in_features, num_classes, hidden=(32,)),
    "logreg": lambda in_features, num_classes: MLP(in_features, num_classes, hidden=()),
}


def available_models() -> tuple[str, ...]:
    return tuple(MODELS)


def build_model(name: str, in_features: int, num_classes: int, *, seed: int) -> nn.Module:
    """A registered model with weights drawn from ``torch.Generator().manual_seed(seed)``."""
    factory = MODELS.get(name)
    if factory is None:
        raise ParameterError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    generator = torch.Generator().manual_seed(int(seed))
    return init_linear_layers(factory(in_features, num_classes), generator=generator)
