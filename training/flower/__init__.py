"""Flower deployment: our sans-IO roles over Flower's SuperLink / SuperNode runtime.

The only package that imports ``flwr``. :mod:`.server_app` drives the server role over
Flower's ``Grid``; :mod:`.client_app` runs a client (or key holder) on a SuperNode;
:mod:`.codec` carries our wire frames inside Flower messages and seals a node's role
state; :mod:`.local` launches a whole deployment as local processes
(``secagg run --engine flower-local``). ``app/`` is the Flower App that ``flwr run``
bundles.
"""
