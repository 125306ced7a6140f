"""Flower App entry point: the ClientApp of the installed secagg package.

A module of its own: a SuperNode starts a process per message, and relay phases
should not pay for importing the server (torch) to run a client role.
"""

from secagg_training.flower.client_app import app as client

__all__ = ["client"]
