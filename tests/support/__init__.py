"""Helpers for the tests (and the chaos hooks of the Ray deployments): never imported by
production code paths except those hooks."""
