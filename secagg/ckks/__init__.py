"""Threshold CKKS secure aggregation (scheme ``ckks``): one-shot, key-additive, t-of-n."""

from secagg.ckks.params import (
    PRESETS,
    SUM_N4096,
    SUM_N8192,
    TEST_INSECURE_N512,
    TEST_INSECURE_N1024,
    CkksParameters,
    Preset,
)
from secagg.ckks.scheme import ThresholdCKKS, default_threshold

__all__ = [
    "PRESETS",
    "SUM_N4096",
    "SUM_N8192",
    "TEST_INSECURE_N512",
    "TEST_INSECURE_N1024",
    "CkksParameters",
    "Preset",
    "ThresholdCKKS",
    "default_threshold",
]
