"""DP-SGD on one client's data: the only module that imports Opacus.

What this module guarantees, and why each point matters:

- **Poisson sampling with our q.** Every record joins each step's batch
  independently with probability ``sample_rate``, decided from bits of the
  caller's ``sampler`` byte source — never torch's RNG, never a data loader's
  guess (Opacus sets q = 1/len(loader), which custom samplers silently break).
  The accountant uses exactly the q used here.
- **Per-sample clipping** by Opacus's grad samplers (``GradSampleModule``) and
  ``DPOptimizer.clip_and_accumulate``.
- **Noise only from** :class:`secagg_privacy.noise.SecureGaussian`: the optimizer's
  noise step is overridden, so Opacus's generator is never consulted.
- **Fail closed on unsupported layers** (``ModuleValidator``, strict): e.g.
  BatchNorm mixes samples within a batch and voids per-sample sensitivity.
- **A public loss normalizer.** Losses are summed and the noisy gradient sum is
  divided by ``expected_batch_size``, a public constant (e.g. the configured
  batch size) — never q·N, which would let the update scale reveal the private
  record count.
- **Empty batches are stepped** (noise-only update): skipping them would make
  the number of mechanism runs data-dependent and under-count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from opacus.validators.errors import UnsupportedError

from secagg_privacy.accounting import DpEvent, sgd_event
from secagg_privacy.checks import positive
from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError
from secagg_privacy.noise import ByteSource, SecureGaussian, check_byte_source

if TYPE_CHECKING:
    from secagg_privacy.budget import ClientBudgetGuard

__all__ = [
    "DPSGDParams",
    "DPTrainStats",
    "poisson_mask",
    "poisson_sample_rate",
    "train_dp_sgd",
    "validate_model",
]

_OPTIMIZERS = ("sgd", "adam")
_U64 = np.dtype("<u8")


@dataclass(frozen=True)
class DPSGDParams:
    """Public DP-SGD parameters for one local training call.

    Attributes:
        noise_multiplier: σ, calibrated once for the whole planned schedule.
        max_grad_norm: per-sample clipping bound C.
        sample_rate: Poisson q, the exact probability each record joins a batch.
        steps: DP-SGD steps to run now (empty batches included).
        expected_batch_size: public loss normalizer (e.g. the configured batch
            size). Required by :func:`train_dp_sgd`; it must not be computed
            from the private record count.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    expected_batch_size: float | None = None

    def __post_init__(self) -> None:
        positive("noise_multiplier", self.noise_multiplier)
        positive("max_grad_norm", self.max_grad_norm)
        q = positive("sample_rate", self.sample_rate)
        if q > 1.0:
            raise PrivacyParameterError(f"sample_rate must be in (0, 1]; got {self.sample_rate!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise PrivacyParameterError(f"steps must be a non-negative integer; got {self.steps!r}")
        if self.expected_batch_size is not None:
            positive("expected_batch_size", self.expected_batch_size)

    @property
    def event(self) -> DpEvent:
        """The DP event these parameters produce (what the ledger records)."""
        return sgd_event(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=self.steps
        )


@dataclass
class DPTrainStats:
    """What one call to :func:`train_dp_sgd` did.

    ``mean_loss`` is computed on private data without noise: a local diagnostic
    only — do not send it to the server or log it outside the client.
    """

    steps: int
    sample_rate: float
    mean_loss: float
    empty_batches: int


def poisson_sample_rate(*, expected_batch_size: float, dataset_size: int) -> float:
    """q = B / N for a public expected batch size B, checked to be a probability."""
    b = positive("expected_batch_size", expected_batch_size)
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
        raise PrivacyParameterError(
            f"dataset_size must be a positive integer; got {dataset_size!r}"
        )
    if b > dataset_size:
        raise PrivacyParameterError(
            f"expected_batch_size must be at most the dataset size {dataset_size}; got {b:g}"
        )
    return b / dataset_size


def poisson_mask(size: int, sample_rate: float, *, sampler: ByteSource) -> np.ndarray:
    """Independent Bernoulli(q) membership for ``size`` records from CSPRNG bits.

    Each record draws a uniform 64-bit word and joins iff it is below
    ⌊q·2⁶⁴⌋ (exact rational arithmetic; bias < 2⁻⁶⁴).
    """
    q = positive("sample_rate", sample_rate)
    if q > 1.0:
        raise PrivacyParameterError(f"sample_rate must be in (0, 1]; got {sample_rate!r}")
    if size == 0:
        return np.zeros(0, dtype=bool)
    if q == 1.0:
        return np.ones(size, dtype=bool)
    threshold = int(Fraction(q) * 2**64)
    words = np.frombuffer(sampler.random_bytes(8 * size), dtype=_U64)
    return words < np.uint64(threshold)


def validate_model(model: torch.nn.Module) -> None:
    """Fail closed unless every layer supports per-sample gradients under DP.

    Raises:
        InsecureConfigurationError: a layer such as BatchNorm is present.
    """
    if not isinstance(model, torch.nn.Module):
        raise PrivacyParameterError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    # Opacus also refuses a model in eval mode; that is not a layer problem (a
    # federated client's copy of an evaluated global model is in eval mode), and
    # train_dp_sgd switches to training mode anyway, so validate the layers as trained.
    was_training = model.training
    model.train()
    try:
        ModuleValidator.validate(model, strict=True)
        GradSampleModule.validate(model, strict=True)
    except UnsupportedError as exc:
        layers = sorted({type(m).__name__ for m in model.modules() if _unsupported(m)})
        raise InsecureConfigurationError(
            f"model must contain only DP-compatible layers; got unsupported {layers or 'layers'}"
        ) from exc
    finally:
        model.train(was_training)
    if not any(p.requires_grad for p in model.parameters()):
        raise PrivacyParameterError("model must have trainable parameters; got none")


def _unsupported(module: torch.nn.Module) -> bool:
    return bool(ModuleValidator.validate(module, strict=False)) and not list(module.children())


class _SecureNoiseDPOptimizer(DPOptimizer):
    """``DPOptimizer`` whose noise comes only from :class:`SecureGaussian`.

    The gradient is divided by the public ``normalizer`` after noising, which is
    Opacus's mean reduction with a public expected batch size.

    Security: ``add_noise`` never calls Opacus's ``_generate_noise``, so no torch
    generator (seeded or global) produces DP noise.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        normalizer: float,
        noise: SecureGaussian,
    ) -> None:
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=None,
            loss_reduction="sum",
            generator=None,
            secure_mode=False,
        )
        self._secure_noise = noise
        self._normalizer = normalizer

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            summed = p.summed_grad
            if summed is None:
                raise PrivacyParameterError("clipped gradient must exist before noising; got None")
            draw = self._secure_noise.sample(tuple(summed.shape), std=std, dtype=summed.dtype)
            p.grad = (summed + draw.to(summed.device)).view_as(p)
            p.summed_grad = None

    def scale_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad /= self._normalizer


def _check_data(features: torch.Tensor, labels: torch.Tensor) -> int:
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise PrivacyParameterError(
            f"features must be a floating torch.Tensor; got {type(features).__name__}"
        )
    if features.dim() < 2:
        raise PrivacyParameterError(f"features must be at least 2-D; got {features.dim()}-D")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise PrivacyParameterError("labels must be a 1-D torch.Tensor of class indices")
    if labels.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise PrivacyParameterError(f"labels must be an integer tensor; got {labels.dtype}")
    if labels.shape[0] != features.shape[0]:
        raise PrivacyParameterError(
            f"labels must have one entry per record ({features.shape[0]}); got {labels.shape[0]}"
        )
    if features.shape[0] == 0:
        raise PrivacyParameterError("features must hold at least one record; got 0")
    return int(features.shape[0])


def _base_optimizer(
    name: str, params: list[torch.nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise PrivacyParameterError(f"optimizer must be one of {_OPTIMIZERS}; got {name!r}")


@contextmanager
def _quiet_hook_warning() -> Iterator[None]:
    # Inputs never require grad here, so torch warns on every backward that the
    # full backward hooks fire on outputs only — expected for per-sample grads.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def train_dp_sgd(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    params: DPSGDParams,
    lr: float,
    noise: SecureGaussian,
    sampler: ByteSource,
    optimizer: str = "sgd",
    guard: ClientBudgetGuard | None = None,
) -> DPTrainStats:
    """Run ``params.steps`` DP-SGD steps on ``model`` in place (cross-entropy loss).

    Args:
        model: a classifier; validated to contain only DP-compatible layers.
        features, labels: this client's private records.
        params: σ, C, q, steps and the public ``expected_batch_size``.
        lr: learning rate.
        noise: the secure Gaussian source (the only source of DP noise).
        sampler: byte source for Poisson batch membership.
        optimizer: ``"sgd"`` or ``"adam"``.
        guard: the client's own budget guard; when given, training is refused
            before any step if it would overspend, and the event is recorded
            afterwards (even if training fails midway: steps may have run).

    Raises:
        BudgetExceededError: ``guard`` refuses the event.
        InsecureConfigurationError: unsupported layer or non-secure noise object.
        PrivacyParameterError: bad data or parameters.

    Security: the noisy model is the only output meant to leave the client;
    ``DPTrainStats.mean_loss`` is not privatized.
    """
    if not isinstance(noise, SecureGaussian):
        raise InsecureConfigurationError(
            f"noise must be a SecureGaussian; got {type(noise).__name__}"
        )
    check_byte_source("sampler", sampler)
    if not isinstance(params, DPSGDParams):
        raise PrivacyParameterError(f"params must be DPSGDParams; got {type(params).__name__}")
    if params.expected_batch_size is None:
        raise PrivacyParameterError(
            "expected_batch_size must be set to a public constant (e.g. the configured batch "
            "size), never derived from the private dataset size; got None"
        )
    learning_rate = positive("lr", lr)
    if optimizer not in _OPTIMIZERS:
        raise PrivacyParameterError(f"optimizer must be one of {_OPTIMIZERS}; got {optimizer!r}")
    size = _check_data(features, labels)
    validate_model(model)
    if guard is not None:
        guard.check(params.event)
    if params.steps == 0:
        return DPTrainStats(
            steps=0, sample_rate=params.sample_rate, mean_loss=math.nan, empty_batches=0
        )
    try:
        return _run_steps(
            model, features, labels.long(), size, params, learning_rate, noise, sampler, optimizer
        )
    finally:
        if guard is not None:
            guard.record(params.event)


def _run_steps(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    size: int,
    params: DPSGDParams,
    lr: float,
    noise: SecureGaussian,
    sampler: ByteSource,
    optimizer: str,
) -> DPTrainStats:
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    normalizer = float(params.expected_batch_size or 1.0)
    dp_optimizer = _SecureNoiseDPOptimizer(
        _base_optimizer(optimizer, trainable, lr),
        noise_multiplier=params.noise_multiplier,
        max_grad_norm=params.max_grad_norm,
        normalizer=normalizer,
        noise=noise,
    )
    total_loss, seen, empty = 0.0, 0, 0
    was_training = model.training
    model.train()
    try:
        with _quiet_hook_warning():
            for _ in range(params.steps):
                mask = torch.from_numpy(poisson_mask(size, params.sample_rate, sampler=sampler))
                xb, yb = features[mask], labels[mask]
                empty += int(xb.shape[0] == 0)
                dp_optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(wrapped(xb), yb, reduction="sum")
                loss.backward()
                dp_optimizer.step()
                total_loss += float(loss.detach())
                seen += int(xb.shape[0])
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        wrapped._close()
        for p in trainable:  # leave the caller a plain model, as it was handed in
            if hasattr(p, "summed_grad"):
                del p.summed_grad
        model.train(was_training)
    mean_loss = total_loss / seen if seen else math.nan
    return DPTrainStats(
        steps=params.steps, sample_rate=params.sample_rate, mean_loss=mean_loss, empty_batches=empty
    )
