"""The HTTP gateway: the app and its route table, the HTTP edge (``api``), other servers' protocols
(``protocols``), the request path (``serving``), child processes (``processes``) and the command
line (``cli``); ``docs/architecture.md`` says why this shape.

Importing this package does not import BentoML; only ``service.gateway`` does.
"""
