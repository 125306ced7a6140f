"""Flower App entry point: the ServerApp of the installed secagg package."""

from training.flower.server_app import app as server

__all__ = ["server"]
