"""The provider simulator: fake Ethereum JSON-RPC providers over one synthetic chain.

- :class:`SyntheticChain`: deterministic blocks, transactions, logs and state (pure).
- :class:`SimProvider`: one provider on its own port, HTTP and WebSocket, with a
  switchable :class:`Behavior` (latency, errors, rate limits, lag, hangs, outages).
- :class:`SimFleet`: several providers and an admin HTTP API; :func:`demo_fleet` builds the
  one behind ``lasso demo``.

``lasso sim`` runs a fleet standalone (:mod:`lasso.sim.cli`); :class:`SampleTraffic` is the
demos' light background client.
"""

from lasso.sim.behavior import Behavior, ProviderStats, TokenBucket
from lasso.sim.chain import TOKEN_ADDRESSES, TRANSFER_TOPIC, ExecutionReverted, SyntheticChain
from lasso.sim.fleet import (
    ProviderSpec,
    SimFleet,
    default_demo_chains,
    default_demo_specs,
    demo_fleet,
    demo_profile_env,
)
from lasso.sim.node import NodeView, RpcError
from lasso.sim.provider import SimProvider
from lasso.sim.traffic import SampleTraffic

__all__ = [
    "TOKEN_ADDRESSES",
    "TRANSFER_TOPIC",
    "Behavior",
    "ExecutionReverted",
    "NodeView",
    "ProviderSpec",
    "ProviderStats",
    "RpcError",
    "SampleTraffic",
    "SimFleet",
    "SimProvider",
    "SyntheticChain",
    "TokenBucket",
    "default_demo_chains",
    "default_demo_specs",
    "demo_fleet",
    "demo_profile_env",
]
