"""`tiergate compress` end to end on digits, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.user_model import small_cnn
from tiergate.compression.cache import MODEL_FILE

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NAMES = ["fp32", "int8", "pruned", "distilled", "lowrank", "pruned+int8", "distilled+int8"]
REQUIRED = {"name", "recipe", "accuracy", "accuracy_ci95", "fidelity", "latency_ms", "throughput_per_s",
            "size_bytes", "params", "flops", "pareto", "build_s"}  # fmt: skip

CONFIG = """
version: 1
model:
  name: digits-small
  blocks: [1, 1, 1, 1]
  width: 16
  train: {epochs: 15, lr: 0.1, schedule: onecycle, batch_size: 64}
data: {source: digits, calibration_size: 128, validation_size: 200}
compress:
  cache_dir: CACHE
  train_base_if_missing: true
  finetune_samples: 1000
  recipes:
    int8: {method: int8, calibration_samples: 64}
    pruned: {method: prune, ratio: 0.5, finetune: {epochs: 4, lr: 0.02, batch_size: 64}}
    distilled: {method: distill, width: 8, fit: {epochs: 8, lr: 0.1, schedule: onecycle, batch_size: 64}}
    lowrank: {method: lowrank, energy: 0.8, finetune: {epochs: 2, lr: 0.01, batch_size: 64}}
  variants: [fp32, int8, pruned, distilled, lowrank, pruned+int8, distilled+int8]
profile: {batch_sizes: [1, 8, 32], budget_s: 0.05, min_runs: 10, warmup_runs: 2}
"""


def tiergate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tiergate.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def menu_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    path = folder / "config.yaml"
    path.write_text(CONFIG.replace("CACHE", str(folder / "cache")))
    return path


@pytest.fixture(scope="module")
def first_menu(config_file) -> dict:
    return menu_of(tiergate("compress", "--json", "--config", str(config_file)))


def test_cold_run_builds_and_measures_every_variant(first_menu, config_file):
    """A cold run prints all seven variants with every documented key, writes the
    manifest and the Pareto chart, and marks at least one variant as Pareto-optimal."""
    variants = {v["name"]: v for v in first_menu["variants"]}
    assert list(variants) == NAMES
    for entry in variants.values():
        assert set(entry) >= REQUIRED
        assert set(entry["latency_ms"]) == {"1", "8", "32"}
        assert entry["latency_ms"]["1"]["p50"] <= entry["latency_ms"]["1"]["p95"]
        low, high = entry["accuracy_ci95"]
        assert low <= entry["accuracy"] <= high
        assert Path(entry["path"]).is_file()
    assert variants["fp32"]["fidelity"] == 1.0 and variants["fp32"]["accuracy"] > 0.9
    assert variants["fp32"]["details"]["max_abs_logit_diff"] < 1e-3
    assert any(v["pareto"] for v in variants.values())
    assert variants["pruned"]["flops"] < variants["fp32"]["flops"] / 2
    assert variants["pruned+int8"]["size_bytes"] < variants["pruned"]["size_bytes"]
    cache = config_file.parent / "cache" / "digits-small"
    assert json.loads((cache / "manifest.json").read_text())["variants"][0]["name"] == "fp32"
    assert (cache / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_warm_run_rebuilds_nothing(first_menu, config_file):
    """A second run with nothing changed takes every artifact from the cache unchanged."""
    warm = menu_of(tiergate("compress", "--json", "--config", str(config_file)))
    assert all(v["cache_hit"] for v in warm["variants"])
    assert [v["sha256"] for v in warm["variants"]] == [v["sha256"] for v in first_menu["variants"]]


def test_truncated_artifact_is_rebuilt_and_only_it(first_menu, config_file):
    """After one artifact is truncated on disk, the next run rebuilds just that one."""
    distilled = next(v for v in first_menu["variants"] if v["name"] == "distilled+int8")
    path = Path(distilled["path"])
    assert path.name == MODEL_FILE
    path.write_bytes(path.read_bytes()[:64])
    again = menu_of(tiergate("compress", "--json", "--config", str(config_file)))
    rebuilt = [v["name"] for v in again["variants"] if not v["cache_hit"]]
    assert rebuilt == ["distilled+int8"]


def test_table_output_names_the_manifest(first_menu, config_file):
    """Without --json the menu is a table followed by where the manifest and chart are."""
    result = tiergate("compress", "--config", str(config_file))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pruned+int8" in result.stdout and "manifest:" in result.stdout


def test_torchscript_model_with_unlabelled_npz(tmp_path, digits):
    """A TorchScript model and an .npz without labels give a fidelity-only menu."""
    torch.manual_seed(0)
    torch.jit.script(small_cnn().eval()).save(str(tmp_path / "model.ts"))
    np.savez(tmp_path / "data.npz", x=digits.test.x)
    menu = menu_of(tiergate(
        "compress", "--json", "--model", str(tmp_path / "model.ts"), "--data", str(tmp_path / "data.npz"),
        "--num-classes", "10", "--variants", "fp32,int8", "--cache-dir", str(tmp_path / "cache"),
    ))  # fmt: skip
    assert menu["labelled"] is False and menu["quality_metric"] == "fidelity"
    assert [v["name"] for v in menu["variants"]] == ["fp32", "int8"]
    assert all(v["accuracy"] is None for v in menu["variants"])
    assert menu["variants"][1]["fidelity"] > 0.5


def test_factory_model_with_weights(tmp_path, digits):
    """`--model package.module:factory --weights W` builds a menu for the user's own class."""
    torch.manual_seed(0)
    torch.save(small_cnn().state_dict(), tmp_path / "weights.pt")
    np.savez(tmp_path / "data.npz", x=digits.test.x, y=digits.test.y)
    menu = menu_of(tiergate(
        "compress", "--json", "--model", "tests.integration.user_model:small_cnn",
        "--weights", str(tmp_path / "weights.pt"), "--data", str(tmp_path / "data.npz"),
        "--variants", "fp32,int8", "--cache-dir", str(tmp_path / "cache"),
    ))  # fmt: skip
    assert menu["labelled"] is True and len(menu["variants"]) == 2


def test_bad_config_exits_2_naming_the_field(tmp_path):
    """A config with a wrong field exits with status 2 and the field's path on stderr."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncompress: {recipes: {int8: {method: int8, calibration_samples: -1}}}\n")
    result = tiergate("compress", "--config", str(bad))
    assert result.returncode == 2
    assert "compress.recipes.int8.int8.calibration_samples" in result.stderr


def test_image_folder_with_input_shape(tmp_path, digits):
    """An image folder (one sub-folder per class) is resized to --input-shape C,H,W."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(digits.test.x[:200], digits.test.y[:200], strict=True)):
        folder = tmp_path / "images" / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image[0] * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16)).save(folder / f"{index}.png")
    torch.save(small_cnn().state_dict(), tmp_path / "weights.pt")
    menu = menu_of(tiergate(
        "compress", "--json", "--model", "tests.integration.user_model:small_cnn",
        "--weights", str(tmp_path / "weights.pt"), "--data", str(tmp_path / "images"),
        "--input-shape", "1,8,8", "--variants", "fp32,int8", "--cache-dir", str(tmp_path / "cache"),
    ))  # fmt: skip
    assert menu["dataset"] == "folder" and menu["labelled"] is True
    fp32 = menu["variants"][0]
    assert fp32["flops"] > 0 and fp32["accuracy"] is not None
