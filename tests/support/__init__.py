"""Helpers for the tests: fault injection, hooked deployments, in-process replicas, fake
clocks. Production code never imports them."""
