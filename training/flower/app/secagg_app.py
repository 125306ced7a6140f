"""Flower App entry points: the ServerApp and ClientApp of the installed secagg package."""

from training.flower.client_app import app as client
from training.flower.server_app import app as server

__all__ = ["client", "server"]
