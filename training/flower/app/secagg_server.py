"""Flower App entry point: the ServerApp of the installed secagg package."""

from secagg_training.flower.server_app import app as server

__all__ = ["server"]
