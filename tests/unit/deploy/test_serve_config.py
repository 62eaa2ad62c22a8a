"""deploy/serve-config.yaml is a valid Ray Serve config pointing at tiergate's builder."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from tiergate.config import load_config

ROOT = Path(__file__).resolve().parents[3]


def test_serve_config_validates_against_rays_schema_and_resolves():
    """The file passes ServeDeploySchema, its import path exists, and its tiergate config loads."""
    raw = yaml.safe_load((ROOT / "deploy" / "serve-config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    module, _, attribute = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    assert load_config(ROOT / app.args["config"]).model.name == "fashion-resnet18"
