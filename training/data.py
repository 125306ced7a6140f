"""Datasets for federated simulation: the embedded digits set, bring-your-own data, partitions.

Shuffling, the train/test split and the client partition are *simulation*
randomness, not security: they only decide which simulated client holds which
sample, and a run must be reproducible from its seed. They therefore use a
seeded ``numpy.random.Generator(PCG64(seed))`` — allowed in this file only
(ruff per-file ignore of TID251). Nothing secret is ever drawn here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from secagg.errors import ParameterError

PARTITIONS = ("iid", "dirichlet")
DEFAULT_TEST_FRACTION = 0.2
DIGITS_RECORDS = 1797  # size of the public scikit-learn digits set
DIGITS_PIXEL_MAX = 16.0  # public pixel range 0..16: the fixed scaling under DP


@dataclasses.dataclass(frozen=True, repr=False)
class FederatedData:
    """A classification dataset split into a training part and a held-out test part.

    Features are float32 (any trailing shape), labels int64 in ``[0, num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str = "custom"
    # Public facts for DP (see threat_model.md): the train-split size of a *public*
    # dataset (None for user data, whose size is private), and whether features were
    # scaled with statistics pooled over the private records (refused under DP).
    public_train_records: int | None = None
    pooled_scaling: bool = False

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ParameterError(
                    f"{split} features must be (n, ...) with n labels; "
                    f"got x{tuple(x.shape)} and y{tuple(y.shape)}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ParameterError(f"{split} labels must be in [0, {self.num_classes})")
        if self.x_train.shape[0] == 0 or self.x_test.shape[0] == 0:
            raise ParameterError(
                f"train and test splits must be non-empty; "
                f"got {self.x_train.shape[0]} and {self.x_test.shape[0]}"
            )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ParameterError("train and test features must have the same shape per sample")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def in_features(self) -> int:
        return int(np.prod(self.input_shape))

    def __repr__(self) -> str:  # shapes only: never dump the records themselves
        return (
            f"FederatedData(name={self.name!r}, train={self.x_train.shape[0]}, "
            f"test={self.x_test.shape[0]}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _generator(seed: int) -> np.random.Generator:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer; got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def _check_fraction(test_fraction: float) -> float:
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1); got {test_fraction}")
    return float(test_fraction)


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale features with the *training* split's statistics only (no test leakage)."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant pixels (digits' borders) stay 0
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    name: str = "custom",
) -> FederatedData:
    """Bring-your-own data from numpy arrays.

    Without ``x_test``/``y_test`` a seeded ``test_fraction`` of ``(x, y)`` is held out.
    Labels must be integers ``0..C-1``; ``standardize`` scales each feature with the
    training split's mean and standard deviation.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2:
        raise ParameterError(
            f"x must be a numeric array of shape (n, ...); got {x.dtype} {x.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ParameterError(
            f"y must be a 1-D integer array with one label per row of x; got {y.dtype} {y.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ParameterError("x must be finite (no NaN or inf)")
    if (x_test is None) != (y_test is None):
        raise ParameterError("x_test and y_test must be given together")
    if x_test is None or y_test is None:
        order = _generator(seed).permutation(x.shape[0])
        n_test = int(round(_check_fraction(test_fraction) * x.shape[0]))
        if not 1 <= n_test < x.shape[0]:
            raise ParameterError(
                f"test split must leave both parts non-empty; got {n_test} of {x.shape[0]}"
            )
        test_idx, train_idx = order[:n_test], order[n_test:]
        x_tr, y_tr, x_te, y_te = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    else:
        x_tr, y_tr = x, y
        x_te, y_te = np.asarray(x_test), np.asarray(y_test)
        if not np.issubdtype(y_te.dtype, np.integer):
            raise ParameterError(f"y_test must be integer labels; got {y_te.dtype}")
    x_tr = x_tr.astype(np.float64)
    x_te = x_te.astype(np.float64)
    if standardize:
        x_tr32, x_te32 = _standardize(x_tr, x_te)
    else:
        x_tr32, x_te32 = x_tr.astype(np.float32), x_te.astype(np.float32)
    if num_classes is None:
        num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    return FederatedData(
        x_train=x_tr32,
        y_train=y_tr.astype(np.int64),
        x_test=x_te32,
        y_test=y_te.astype(np.int64),
        num_classes=int(num_classes),
        name=name,
        pooled_scaling=bool(standardize),
    )


def from_torch_dataset(
    dataset: torch.utils.data.Dataset[Any],
    *,
    test_dataset: torch.utils.data.Dataset[Any] | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    standardize: bool = False,
    num_classes: int | None = None,
    name: str = "custom",
) -> FederatedData:
    """Bring-your-own data from a map-style torch ``Dataset`` of ``(features, label)`` pairs.

    The samples are materialized into arrays (this engine simulates small federations).
    """
    x, y = _materialize(dataset, "dataset")
    if test_dataset is None:
        return from_arrays(
            x,
            y,
            test_fraction=test_fraction,
            seed=seed,
            standardize=standardize,
            num_classes=num_classes,
            name=name,
        )
    x_te, y_te = _materialize(test_dataset, "test_dataset")
    return from_arrays(
        x,
        y,
        x_test=x_te,
        y_test=y_te,
        seed=seed,
        standardize=standardize,
        num_classes=num_classes,
        name=name,
    )


def _materialize(dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        n = len(dataset)
    except TypeError:
        raise ParameterError(f"{what} must be a map-style Dataset with a length") from None
    if n == 0:
        raise ParameterError(f"{what} must be non-empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ParameterError(f"{what} items must be (features, label) pairs")
        features, label = item
        xs.append(np.asarray(features.detach() if torch.is_tensor(features) else features))
        ys.append(int(label.item() if torch.is_tensor(label) else label))
    shapes = {a.shape for a in xs}
    if len(shapes) != 1:
        raise ParameterError(f"{what} features must all have one shape; got {len(shapes)} shapes")
    x = np.stack(xs)
    if x.ndim == 1:
        x = x[:, None]
    return x, np.asarray(ys, dtype=np.int64)


def load_digits_data(
    *, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION
) -> FederatedData:
    """scikit-learn's 8×8 digits (1797 samples, 10 classes): ships with sklearn, no download.

    Pixels (0..16) are scaled by the public constant 1/16, never by statistics of
    the records, so one record's presence changes no other record's features. The
    dataset is public, so its train-split size is recorded as a public fact: it
    fixes the default DP ``nominal_records`` (train size // clients).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = from_arrays(
        np.asarray(bunch.data, dtype=np.float64) / DIGITS_PIXEL_MAX,
        np.asarray(bunch.target, dtype=np.int64),
        test_fraction=test_fraction,
        seed=seed,
        standardize=False,
        num_classes=10,
        name="digits",
    )
    public = DIGITS_RECORDS - int(round(test_fraction * DIGITS_RECORDS))
    return dataclasses.replace(data, public_train_records=public)


def _check_clients(clients: int, n: int) -> None:
    if not isinstance(clients, int | np.integer) or clients < 1:
        raise ParameterError(f"clients must be a positive integer; got {clients!r}")
    if clients > n:
        raise ParameterError(
            f"clients must be at most the number of training samples ({n}) "
            f"so that no client is empty; got {clients}"
        )


def partition_iid(n: int, clients: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into ``clients`` parts whose sizes differ by ≤ 1."""
    _check_clients(clients, n)
    order = _generator(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, clients)]


def partition_dirichlet(
    labels: np.ndarray, clients: int, alpha: float, *, seed: int
) -> list[np.ndarray]:
    """Label-skewed non-IID split: each class is divided by proportions ~ Dirichlet(α·1).

    Small α concentrates each class on few clients. A client left empty by the draw
    takes one sample from the currently largest client, so every client holds data
    and every sample is still held exactly once.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ParameterError(f"labels must be 1-D; got shape {labels.shape}")
    _check_clients(clients, labels.shape[0])
    if not (np.isfinite(alpha) and alpha > 0):
        raise ParameterError(f"alpha must be a positive finite number; got {alpha}")
    gen = _generator(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for cls in np.unique(labels):
        idx = gen.permutation(np.flatnonzero(labels == cls))
        shares = gen.dirichlet(np.full(clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * idx.size).round().astype(np.int64)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].append(chunk)
    out = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    for client in range(clients):
        if out[client].size == 0:
            donor = int(np.argmax([p.size for p in out]))
            out[client], out[donor] = out[donor][-1:], out[donor][:-1]
    return [np.sort(p.astype(np.int64)) for p in out]


def partition(
    labels: np.ndarray, clients: int, method: str = "iid", *, alpha: float = 0.5, seed: int
) -> list[np.ndarray]:
    """Indices of each client's training samples (``method`` is ``"iid"`` or ``"dirichlet"``)."""
    if method == "iid":
        return partition_iid(int(np.asarray(labels).shape[0]), clients, seed=seed)
    if method == "dirichlet":
        return partition_dirichlet(labels, clients, alpha, seed=seed)
    raise ParameterError(f"partition must be one of {', '.join(PARTITIONS)}; got {method!r}")


def client_sizes(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray([p.size for p in parts], dtype=np.int64)
