"""Lasso: a smart proxy and router for Ethereum JSON-RPC."""

__version__ = "0.1.0"
__all__ = ["__version__"]
