"""The canary experiment behind the one-run audit: train once, score every canary.

Canary design — isolated-coordinate input canaries, observed white-box.
Canary ``i`` is a real training example whose features are zero except one
extra input coordinate ``d + i`` (``d`` = the base data's width) set to
:data:`CANARY_SCALE`, with a label drawn uniformly at random. No other example
is non-zero in that coordinate, so the column ``d + i`` of the first linear
layer receives exactly two things per step: canary ``i``'s clipped per-example
gradient (only when it is in the dataset *and* Poisson-sampled) and the DP
noise. The canaries therefore go through the production code path end to end
(:func:`secagg_privacy.dpsgd.train_dp_sgd`: Poisson sampling, Opacus per-example
clipping, CSPRNG noise, the optimizer step) while their effect is as cleanly
separable as a gradient-space ("Dirac") canary's.

Why observe every step rather than only the final model: in the final model a
canary's total push is its clipped gradient times the number of steps it was
sampled, and that count spreads by ±√(Tq(1−q)) — the mechanism's own
randomness — which caps how well any final-model score can separate "in" from
"out" however small the noise. Observing every intermediate model — the threat
model under which DP-SGD's ε is stated (all iterates released) — removes that
cap: each step is tested separately. (Plain input-space canaries that share
features with real data are weaker still; privacy.md reports 0.43 against a
claimed 3.09 for them.) For each step the auditor computes, on the model it
observed, canary ``i``'s clipped gradient ``g`` restricted to its column
(exact per-example norms for Linear layers), projects the column's change onto
it, and adds the log-likelihood ratio of "sampled with probability q" vs
"absent" under the *claimed* noise σ:

    LLR_t = log(1 − q + q · exp((x·|g| − |g|²/2) / (σC)²)).

The canary's score is the sum over steps: the transcript's likelihood ratio for
that canary under the claimed mechanism (Neyman–Pearson). Any score is valid
for the one-run bound; this one makes the Gaussian-fit estimate land near the
claimed ε on honest runs and lifts the bound far above the claim when the
noise is smaller than recorded. The bound itself stays well below the claim on
honest runs: it pays for finite m, β = 0.05 and the Bonferroni family.

Security: the experiment trains on synthetic canaries (plus an optional base
dataset the caller already holds); inclusion bits and labels come from the
caller's CSPRNG and are returned to the caller, never logged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from secagg_privacy import accounting
from secagg_privacy.dpsgd import DPSGDParams, train_dp_sgd
from secagg_privacy.errors import PrivacyParameterError
from secagg_privacy.noise import ByteSource, SecureGaussian, check_byte_source

CANARY_SCALE = 4.0  # canary coordinate value: most of its gradient norm lands in its column
DEFAULT_CANARIES = 1000
MAX_AUDIT_STEPS = 2000  # keeps one audit under about a minute on 2 cores

ModelFactory = Callable[[int, int], nn.Module]
# One DP-SGD step of the audited mechanism on ``model`` in place: (model, features,
# labels, step index). The audit passes the production client trainer
# (``PrivacyPlan.train``) so a fault anywhere on that path is observed.
StepTrainer = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], object]
CLIP_Z_LIMIT = 5.0  # |z| of the canaries' summed clipped contribution; p ≈ 6e-7 when honest
SAMPLING_P_LIMIT = 1e-6  # two-sided binomial p-value below which the sampling rate is wrong


@dataclasses.dataclass(frozen=True)
class CanaryConfig:
    """The audited DP-SGD mechanism and the experiment around it.

    ``noise_multiplier`` is the *claimed* σ (what the ledger recorded, what ε is
    computed from). ``actual_noise_multiplier`` exists only to test the auditor
    (e.g. a 5× noise bug): it is a parameter of this experiment, never of the
    production training path. ``None`` means "train with the claimed σ".
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    lr: float
    delta: float
    canaries: int = DEFAULT_CANARIES
    actual_noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm", "lr"):
            _positive(name, getattr(self, name))
        if not (0 < self.sample_rate <= 1):
            raise PrivacyParameterError(f"sample_rate must be in (0, 1]; got {self.sample_rate}")
        if not (0 < self.delta < 1):
            raise PrivacyParameterError(f"delta must be in (0, 1); got {self.delta}")
        _count("steps", self.steps, 1, MAX_AUDIT_STEPS)
        _count("canaries", self.canaries, 2, 100_000)
        if self.actual_noise_multiplier is not None:
            if not (
                math.isfinite(self.actual_noise_multiplier) and self.actual_noise_multiplier >= 0
            ):
                raise PrivacyParameterError(
                    "actual_noise_multiplier must be finite and non-negative; "
                    f"got {self.actual_noise_multiplier}"
                )

    @property
    def trained_noise_multiplier(self) -> float:
        if self.actual_noise_multiplier is None:
            return self.noise_multiplier
        return self.actual_noise_multiplier

    def theoretical_epsilon(self) -> float:
        """ε the accountant of record claims for this mechanism (claimed σ)."""
        return accounting.epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            delta=self.delta,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class CanaryResult:
    """Per-canary scores and inclusion bits of one audited training run."""

    scores: np.ndarray  # float64 (m,)
    included: np.ndarray  # bool (m,)
    # Σ over steps and output units of the squared noise-scaled column movement, per
    # canary; for an excluded canary the column receives nothing but the DP noise.
    noise_squares: np.ndarray  # float64 (m,)
    noise_samples_per_canary: int  # steps × output units
    theoretical_epsilon: float
    config: CanaryConfig
    seconds: float
    empty_batches: int
    # Per parameter tensor: (Σ squared residual, count); residual = the observed update
    # minus the exactly recomputed sum of clipped per-example gradients, i.e. the noise.
    tensor_noise: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
    sampled_rows: int = 0  # rows the trainer actually used, over all steps
    row_trials: int = 0  # dataset rows × steps (Binomial(trials, q) if sampling is honest)
    clip_z: float = 0.0  # Σ(x − clipped signal) / (σC√K) over sampled canary-steps
    clip_excess: float = 0.0  # mean (unclipped − clipped) column norm: the test's power, in σC
    clip_samples: int = 0
    bad_forwards: int = 0  # steps where the trainer did not run exactly one forward pass

    def __repr__(self) -> str:  # the bits are the audit's secret until scored
        return (
            f"CanaryResult(canaries={self.scores.size}, steps={self.config.steps}, "
            f"theoretical_epsilon={self.theoretical_epsilon:.3f}, seconds={self.seconds:.1f})"
        )


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyParameterError(f"{name} must be a positive number; got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise PrivacyParameterError(f"{name} must be a positive finite number; got {value}")


def _count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PrivacyParameterError(f"{name} must be an integer in [{low}, {high}]; got {value!r}")


# ----------------------------------------------------------------- CSPRNG draws


def inclusion_bits(source: ByteSource, m: int) -> np.ndarray:
    """``m`` independent fair coins (one CSPRNG bit each)."""
    raw = np.frombuffer(source.random_bytes((m + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:m].astype(bool)


def uniform_labels(source: ByteSource, m: int, num_classes: int) -> np.ndarray:
    """``m`` unbiased labels in ``[0, num_classes)`` by rejection sampling of 32-bit words."""
    limit = (2**32 // num_classes) * num_classes
    out = np.empty(0, dtype=np.int64)
    while out.size < m:
        words = np.frombuffer(source.random_bytes(4 * (m + 8)), dtype="<u4").astype(np.int64)
        out = np.concatenate([out, words[words < limit] % num_classes])
    return out[:m]


def _torch_generator(source: ByteSource) -> torch.Generator:
    """A generator for the instrument model's initial weights (not DP noise)."""
    seed = int.from_bytes(source.random_bytes(8), "little") >> 1
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------- the model


def logistic_regression(in_features: int, num_classes: int) -> nn.Module:
    """The default instrument: multinomial logistic regression."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def _init_linear(model: nn.Module, generator: torch.Generator) -> None:
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.in_features)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)


def _check_instrument(model: nn.Module, width: int) -> list[nn.Linear]:
    """The model's Linear layers; the first must read the padded input of ``width``.

    Exact per-example gradient norms (needed for the clipped canary gradient)
    are computed for Linear layers only, so every parameter must belong to one.
    """
    linears = [mod for mod in model.modules() if isinstance(mod, nn.Linear)]
    if not linears or linears[0].in_features != width:
        raise PrivacyParameterError(
            f"audit model's first layer must be nn.Linear with {width} inputs; "
            f"got {linears[0].in_features if linears else 'no Linear layer'}"
        )
    random_layers = [type(mod).__name__ for mod in model.modules() if _is_dropout(mod)]
    if random_layers:
        # The probe must see the same function the DP-SGD step differentiates.
        raise PrivacyParameterError(
            f"audit model must be deterministic (no dropout); got {random_layers[:3]}"
        )
    owned = {id(p) for layer in linears for p in layer.parameters(recurse=False)}
    foreign = [n for n, p in model.named_parameters() if id(p) not in owned]
    if foreign:
        raise PrivacyParameterError(
            f"audit model must have parameters only in nn.Linear layers; got {foreign[:3]}"
        )
    return linears


def _is_dropout(module: nn.Module) -> bool:
    return isinstance(
        module, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d | nn.AlphaDropout
    )


# ----------------------------------------------------------------- per-step scoring


@dataclasses.dataclass
class _Probe:
    """Per-canary gradient facts at the current model: direction, clipped column norm."""

    direction: torch.Tensor  # (m, h): unit vectors; column descent moves along −direction
    signal: torch.Tensor  # (m,): norm of the clipped gradient restricted to the column
    unclipped: torch.Tensor  # (m,): the same before clipping (what a no-clip bug adds)


def _probe(
    model: nn.Module,
    linears: list[nn.Linear],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    clip: float,
) -> _Probe:
    """Exact per-canary clipped gradients on the canary column (Linear-layer norm trick).

    For a Linear layer the per-example weight gradient is the outer product of
    the output gradient δ and the input a, so its norm is |δ|·|a| (+|δ| for the
    bias): summing over layers gives each canary's full gradient norm, hence
    Opacus's clipping factor min(1, C/|g|).
    """
    seen: list[tuple[torch.Tensor, torch.Tensor, bool]] = []

    def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.append((args[0].detach(), out, getattr(layer, "bias", None) is not None))

    handles = [layer.register_forward_hook(hook) for layer in linears]
    try:
        loss = nn.functional.cross_entropy(model(inputs), labels, reduction="sum")
        deltas = torch.autograd.grad(loss, [out for _, out, _ in seen])
    finally:
        for handle in handles:
            handle.remove()
    norm_sq = torch.zeros(inputs.shape[0], dtype=torch.float64)
    for (a, _, has_bias), d in zip(seen, deltas, strict=True):
        a2 = a.reshape(a.shape[0], -1).double().pow(2).sum(1)
        d2 = d.reshape(d.shape[0], -1).double().pow(2).sum(1)
        norm_sq += d2 * (a2 + (1.0 if has_bias else 0.0))
    first = deltas[0].reshape(inputs.shape[0], -1).double()  # δ of layer 1: column grad / scale
    column_norm = first.norm(dim=1) * CANARY_SCALE
    clip_factor = torch.clamp(clip / (norm_sq.sqrt() + 1e-6), max=1.0)
    direction = first / first.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return _Probe(direction, column_norm * clip_factor, column_norm)


def _step_llr(x: torch.Tensor, signal: torch.Tensor, *, q: float, noise_std: float) -> torch.Tensor:
    """log-likelihood ratio of "present with prob. q" vs "absent" for one step."""
    z = (x * signal - signal.pow(2) / 2) / noise_std**2
    if q >= 1.0:
        return z
    return torch.logaddexp(torch.full_like(z, math.log1p(-q)), z + math.log(q))


# ----------------------------------------------------------------- the experiment


def _training_set(
    base_x: torch.Tensor, base_y: torch.Tensor, labels: np.ndarray, included: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Base rows zero-padded by m columns, plus the included canaries; and all canary inputs."""
    n, d = base_x.shape
    m = labels.size
    canary_x = torch.zeros(m, d + m, dtype=torch.float32)
    canary_x[torch.arange(m), d + torch.arange(m)] = CANARY_SCALE
    canary_y = torch.from_numpy(labels)
    padded = torch.cat([base_x, torch.zeros(n, m, dtype=torch.float32)], dim=1)
    keep = torch.from_numpy(included)
    features = torch.cat([padded, canary_x[keep]], dim=0)
    targets = torch.cat([base_y, canary_y[keep]], dim=0)
    return features, targets, canary_x, canary_y


def run_canary_experiment(
    base_features: torch.Tensor | np.ndarray,
    base_labels: torch.Tensor | np.ndarray,
    *,
    config: CanaryConfig,
    num_classes: int,
    rng: ByteSource,
    noise: SecureGaussian | None = None,
    model_factory: ModelFactory | None = None,
    trainer: StepTrainer | None = None,
) -> CanaryResult:
    """Insert m canaries (each with probability 1/2), train with DP-SGD, score each.

    Args:
        base_features, base_labels: ordinary training data the canaries hide in
            (may be empty); features are flattened to ``(n, d)``; duplicate rows are
            dropped so every row the trainer uses is identified exactly.
        config: the audited mechanism (claimed σ, q, steps, clip, lr, δ).
        num_classes: label range of the model.
        rng: CSPRNG for inclusion bits, canary labels, Poisson sampling and the
            instrument's initial weights.
        noise: the DP noise source for the direct trainer; default a
            :class:`SecureGaussian` on the OS CSPRNG.
        model_factory: ``(in_features, num_classes) -> nn.Module`` built only of
            Linear layers and parameter-free activations; default logistic regression.
        trainer: one step of the audited mechanism (the audit passes the production
            client trainer); default :func:`secagg_privacy.dpsgd.train_dp_sgd` with one step.
            It must train with plain SGD at ``config.lr`` and normalizer
            ``q·(n + m/2)`` so the observed update inverts to the noisy gradient sum.

    Security: inclusion bits are the audit's ground truth; they are returned
    to the caller and never logged.
    """
    source = check_byte_source("rng", rng)
    noise = noise if noise is not None else SecureGaussian()
    bx = torch.as_tensor(np.asarray(base_features), dtype=torch.float32)
    by = torch.as_tensor(np.asarray(base_labels), dtype=torch.int64)
    bx = bx.reshape(bx.shape[0], -1) if bx.ndim > 1 else bx.reshape(0, 0)
    if by.ndim != 1 or by.shape[0] != bx.shape[0]:
        raise PrivacyParameterError(
            f"base labels must be 1-D with one label per row; got {tuple(by.shape)} for "
            f"{bx.shape[0]} rows"
        )
    _count("num_classes", num_classes, 2, 1_000_000)
    if by.numel() and (int(by.min()) < 0 or int(by.max()) >= num_classes):
        raise PrivacyParameterError(f"base labels must be in [0, {num_classes})")
    bx, by = _unique_rows(bx, by)

    m = config.canaries
    started = time.perf_counter()
    included = inclusion_bits(source, m)
    labels = uniform_labels(source, m, num_classes)
    features, targets, canary_x, canary_y = _training_set(bx, by, labels, included)
    width = features.shape[1]
    model = (model_factory or logistic_regression)(width, num_classes)
    linears = _check_instrument(model, width)
    _init_linear(model, _torch_generator(source))
    # Public normalizer: q × the *expected* dataset size (base + m/2), not the
    # realized count, so the update scale carries no information about the bits.
    normalizer = normalizer_for(config.sample_rate, bx.shape[0], m)
    step = trainer or _direct_trainer(config, normalizer, noise, source)
    obs = _observe_training(
        model, linears, features, targets, canary_x, canary_y, config, step, normalizer
    )
    return CanaryResult(
        scores=obs.scores.numpy(),
        included=included,
        noise_squares=obs.squares.numpy(),
        noise_samples_per_canary=config.steps * int(linears[0].weight.shape[0]),
        theoretical_epsilon=config.theoretical_epsilon(),
        config=config,
        seconds=time.perf_counter() - started,
        empty_batches=obs.empty,
        tensor_noise={k: (float(v), obs.tensor_counts[k]) for k, v in obs.tensor_sq.items()},
        sampled_rows=obs.sampled_rows,
        row_trials=int(features.shape[0]) * config.steps,
        clip_z=obs.clip_sum
        / (config.noise_multiplier * config.max_grad_norm)
        / math.sqrt(max(obs.clip_count, 1)),
        clip_excess=obs.clip_excess
        / max(obs.clip_count, 1)
        / (config.noise_multiplier * config.max_grad_norm),
        clip_samples=obs.clip_count,
        bad_forwards=obs.bad_forwards,
    )


def normalizer_for(sample_rate: float, base_rows: int, canaries: int) -> float:
    """The public loss normalizer of the experiment: q × the expected dataset size."""
    return sample_rate * (base_rows + canaries / 2)


def _unique_rows(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop repeated feature rows (first kept), so a row identifies its record."""
    seen: set[bytes] = set()
    keep = []
    for i in range(x.shape[0]):
        key = x[i].numpy().tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    index = torch.tensor(keep, dtype=torch.int64)
    return x[index], y[index]


def _direct_trainer(
    config: CanaryConfig, normalizer: float, noise: SecureGaussian, source: ByteSource
) -> StepTrainer:
    params = DPSGDParams(
        noise_multiplier=config.trained_noise_multiplier,
        max_grad_norm=config.max_grad_norm,
        sample_rate=config.sample_rate,
        steps=1,
        expected_batch_size=normalizer,
    )

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: int) -> object:
        return train_dp_sgd(model, x, y, params=params, lr=config.lr, noise=noise, sampler=source)

    return step


@dataclasses.dataclass
class _Observed:
    scores: torch.Tensor
    squares: torch.Tensor
    tensor_sq: dict[str, float]
    tensor_counts: dict[str, int]
    empty: int = 0
    sampled_rows: int = 0
    clip_sum: float = 0.0
    clip_excess: float = 0.0
    clip_count: int = 0
    bad_forwards: int = 0


def _clipped_sum(
    model: nn.Module,
    before: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    clip: float,
) -> dict[str, torch.Tensor]:
    """Σ of per-example gradients clipped to ``clip`` (Opacus's factor) at ``before``."""
    if x.shape[0] == 0:
        return {k: torch.zeros_like(v) for k, v in before.items()}

    def loss(params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, params, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(before, x, y)
    norms = torch.sqrt(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values()))
    factor = torch.clamp(clip / (norms + 1e-6), max=1.0)
    return {k: torch.einsum("i,i...->...", factor, g) for k, g in grads.items()}


def _observe_training(
    model: nn.Module,
    linears: list[nn.Linear],
    features: torch.Tensor,
    targets: torch.Tensor,
    canary_x: torch.Tensor,
    canary_y: torch.Tensor,
    config: CanaryConfig,
    trainer: StepTrainer,
    normalizer: float,
) -> _Observed:
    """Run ``config.steps`` DP-SGD steps one at a time through ``trainer``; observe each.

    Per step the auditor sees which rows the trainer fed the model (a forward
    pre-hook: rows are unique), so it checks the sampling rate, recomputes the
    exact clipped gradient sum of that batch, and takes the rest of every
    parameter tensor's update as the noise actually applied. Per canary it also
    keeps the column movement in noise units (pure noise when excluded) and the
    per-step likelihood-ratio score under the *claimed* σ.
    """
    d = features.shape[1] - canary_x.shape[0]
    m = canary_x.shape[0]
    column = linears[0].weight  # (h, d + m): canary i owns column d + i
    row_of = {features[i].numpy().tobytes(): i for i in range(features.shape[0])}
    scale = config.lr / normalizer  # an SGD step moves by lr / normalizer × noisy sum
    noise_std = config.noise_multiplier * config.max_grad_norm  # the *claimed* noise
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    column_name = next(n for n, p in model.named_parameters() if p is column)
    # canary index of each row (−1 for base rows): the one non-zero canary coordinate
    marks = features[:, d:]
    canary_of = torch.where(marks.abs().sum(1) > 0, marks.abs().argmax(1), -1)
    obs = _Observed(
        scores=torch.zeros(m, dtype=torch.float64),
        squares=torch.zeros(m, dtype=torch.float64),
        tensor_sq=dict.fromkeys(names, 0.0),
        tensor_counts=dict.fromkeys(names, 0),
    )
    batches: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        batches.append(args[0].detach().clone())

    for index in range(config.steps):
        probe = _probe(model, linears, canary_x, canary_y, config.max_grad_norm)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
        batches.clear()
        handle = model.register_forward_pre_hook(capture)
        try:
            trainer(model, features, targets, index)
        finally:
            handle.remove()
        if len(batches) != 1:
            obs.bad_forwards += 1
            continue
        rows = torch.tensor(
            [row_of.get(r.numpy().tobytes(), -1) for r in batches[0]], dtype=torch.int64
        )
        if bool((rows < 0).any()):  # the trainer fed rows that are not the data set
            obs.bad_forwards += 1
            continue
        obs.sampled_rows += int(rows.numel())
        obs.empty += int(rows.numel() == 0)
        clipped = _clipped_sum(model, before, features[rows], targets[rows], config.max_grad_norm)
        after = dict(model.named_parameters())
        for n in names:
            moved = (before[n] - after[n].detach()).double() / scale
            residual = moved - clipped[n].double()
            obs.tensor_sq[n] += float(residual.pow(2).sum())
            obs.tensor_counts[n] += residual.numel()
        moved_cols = before[column_name][:, d:] - column.detach()[:, d:]
        moved_cols = moved_cols.double().T / scale  # (m, h), descent sign
        x = (moved_cols * probe.direction).sum(dim=1)
        obs.scores += _step_llr(x, probe.signal, q=config.sample_rate, noise_std=noise_std)
        obs.squares += moved_cols.pow(2).sum(dim=1)
        hit = canary_of[rows]
        hit = hit[hit >= 0]
        # a sampled canary adds exactly its clipped column gradient (+ noise) along its direction
        obs.clip_sum += float((x[hit] - probe.signal[hit]).sum())
        obs.clip_excess += float((probe.unclipped[hit] - probe.signal[hit]).sum())
        obs.clip_count += int(hit.numel())
    return obs
