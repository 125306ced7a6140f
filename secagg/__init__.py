"""secagg: secure aggregation for federated learning (sans-IO protocol engine)."""

from secagg.errors import SecAggError
from secagg.protocol import Aggregate, Scheme
from secagg.schemes import AggregationConfig, available_schemes, create_scheme

__all__ = [
    "Aggregate",
    "AggregationConfig",
    "Scheme",
    "SecAggError",
    "available_schemes",
    "create_scheme",
]
__version__ = "0.1.0"
