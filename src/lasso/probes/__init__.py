"""Background probes feeding the kernel: block heights and provider health.

* :mod:`lasso.probes.heights`: the node's prober (one poll per idle upstream instance,
  events for breaker recoveries, rate limits and lag).
* :mod:`lasso.probes.health`: what a probe answer means and what it changes (pure).
* :mod:`lasso.probes.discovery`: endpoint discovery behind ``lasso probe``.
"""
