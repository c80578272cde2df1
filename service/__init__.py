"""The HTTP gateway: validation, model pool with hot swap, and the BentoML service.

Importing this package does not import BentoML; only ``service.gateway`` does.
"""
