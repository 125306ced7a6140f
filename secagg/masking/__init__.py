"""Pairwise-mask secure aggregation (SecAgg, Bonawitz et al. CCS 2017) with the sparse
k-regular graph of SecAgg+ (Bell et al. CCS 2020), registered as scheme ``masking``.

Public face: :class:`PairwiseMasking` (a :class:`~secagg.protocol.Scheme`),
:class:`FixedPointEncoding`, :class:`MaskingGraph`, and the roles
:class:`MaskingClient` / :class:`MaskingServer`.
"""

from secagg.masking.client import ClientPhase, MaskingClient
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.graph import MaskingGraph, default_degree
from secagg.masking.params import RoundParams
from secagg.masking.scheme import PairwiseMasking
from secagg.masking.server import MaskingServer, ServerPhase

__all__ = [
    "ClientPhase",
    "FixedPointEncoding",
    "MaskingClient",
    "MaskingGraph",
    "MaskingServer",
    "PairwiseMasking",
    "RoundParams",
    "ServerPhase",
    "default_degree",
]
