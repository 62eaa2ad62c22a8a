"""The autoscaling-and-routing simulation behind ``tests.benchmarks.sim_autoscale``.

events (the loop and its clock) -> service (run times from the menu) -> pool (a deployment's
replicas) -> gateway (tiergate's routing over them) and autoscaler (Ray's rule) -> scenarios
(one seeded run) -> metrics and report (per-bin figures, criteria, table, plot).
"""
