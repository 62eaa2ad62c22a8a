"""The ``tiergate`` command.

tiergate compress [--config F] [--json]     build, measure and print the menu
tiergate serve [--config F]                 build the menu and serve it on Ray Serve
tiergate ray-env [--config F]               Ray's feature flags that serve sets (token auth too), as exports
tiergate train-base [--config F] [--out W]  train the built-in base model
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tiergate import __version__


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "json", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )  # fmt: skip
    for noisy in ("torch.onnx", "onnxscript", "onnx_ir", "matplotlib"):  # exporter internals
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from tiergate.compression import CompressionError, DataError, ModelError
    from tiergate.config import ConfigError

    try:
        return args.run(args)
    except (ConfigError, DataError, ModelError, CompressionError, ValueError) as error:
        print(f"tiergate: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tiergate {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    compress = commands.add_parser("compress", help="build, measure and print the variant menu")
    _add_source_options(compress)
    compress.add_argument("--json", action="store_true", help="print the menu as one JSON object")
    compress.add_argument("--reprofile", action="store_true", help="re-time even if cached")
    compress.set_defaults(run=_compress)

    serve_cmd = commands.add_parser("serve", help="build the menu, then serve it over HTTP on Ray Serve")
    _add_source_options(serve_cmd)
    serve_cmd.add_argument("--host", help="default: serving.http.host (127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="default: serving.http.port (8000)")
    serve_cmd.set_defaults(run=_serve)

    ray_env = commands.add_parser(
        "ray-env",
        help="print the Ray feature flags `serve` sets (and where each comes from) as shell exports",
    )
    _add_source_options(ray_env)
    ray_env.set_defaults(run=_ray_env)

    train = commands.add_parser("train-base", help="train the built-in ResNet base on the data")
    _add_source_options(train)
    train.add_argument("--out", type=Path, help="weights file (default: model.weights)")
    train.set_defaults(run=_train_base)
    return parser


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (default: $TIERGATE_CONFIG or "
                        "the shipped Fashion-MNIST config)")  # fmt: skip
    parser.add_argument("--model", help="TorchScript file, or package.module:factory")
    parser.add_argument("--weights", type=Path, help="state_dict for --model factory")
    parser.add_argument("--data", type=Path, help=".npz with x (N,C,H,W) [and y], or image folder")
    parser.add_argument("--num-classes", type=int, help="classes, when the data has no labels")
    parser.add_argument("--input-shape", help="C,H,W of the model input (image folders)")
    parser.add_argument("--variants", help="comma-separated, e.g. fp32,int8,pruned+int8")
    parser.add_argument("--cache-dir", type=Path, help="where artifacts and the manifest go")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field (YAML value), e.g. serving.ray.topology=per_variant; "
                        "repeatable")  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.model:
        if ":" in args.model and not Path(args.model).exists():
            overrides.update({"model.source": "factory", "model.factory": args.model})
            overrides["model.weights"] = str(args.weights) if args.weights else None
        else:
            overrides.update({"model.source": "torchscript", "model.path": str(Path(args.model).resolve())})
        overrides["model.name"] = Path(args.model.split(":")[-1]).stem.replace(".", "-") or "model"
    elif args.weights:
        overrides["model.weights"] = str(args.weights.resolve())
    if args.data:
        source = "npz" if args.data.suffix == ".npz" else "folder"
        overrides.update({"data.source": source, "data.path": str(args.data.resolve())})
    if args.input_shape:
        try:
            channels, height, width = (int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise ValueError(f"--input-shape: expected C,H,W, got {args.input_shape!r}") from None
        overrides.update({"data.channels": channels, "data.image_size": (height, width)})
    if args.num_classes:
        overrides["data.num_classes"] = args.num_classes
    if args.variants:
        overrides["compress.variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.cache_dir:
        overrides["compress.cache_dir"] = str(args.cache_dir)
    for assignment in args.set:
        field, sep, value = assignment.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--set: expected FIELD=VALUE, got {assignment!r}")
        overrides[field.strip()] = yaml.safe_load(value)
    return overrides


def _compress(args: argparse.Namespace) -> int:
    from tiergate.build import build_menu, menu_files
    from tiergate.config import load_config
    from tiergate.profiles import render_table

    config = load_config(args.config, _overrides(args))
    menu = build_menu(config, reprofile=args.reprofile)
    if args.json:
        print(json.dumps(menu.model_dump(mode="json")))
        return 0
    files = menu_files(config)
    print(render_table(menu))
    print(f"\nmanifest: {files.manifest}\npareto chart: {files.chart}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tiergate.config import load_config

    overrides = _overrides(args)
    if args.host:
        overrides["serving.http.host"] = args.host
    if args.port:
        overrides["serving.http.port"] = args.port
    config = load_config(args.config, overrides)
    from tiergate import runtime
    from tiergate.serving.ray_env import ray_flag_sources

    ray = config.serving.ray
    flags = ray_flag_sources(config.serving)  # what runtime.start sets, and where each value comes from
    print("Ray feature flags:", *(f"  {name}={value}  ({source})" for name, (value, source) in flags.items()),
          sep="\n", file=sys.stderr)  # fmt: skip
    live = None
    try:
        if live_build(config):
            print(f"starting Ray Serve ({ray.topology} topology, {ray.ingress} ingress) with what the "
                  "cache holds (fp32 at least); the rest is built behind it...", file=sys.stderr)  # fmt: skip
            url, live = runtime.start_live(config, _config_path(args), overrides)
            menu = live.first
        else:
            from tiergate.build import build_menu

            menu = build_menu(config)  # before Ray starts, with progress; the replicas are handed it
            print(f"starting Ray Serve ({ray.topology} topology, {ray.ingress} ingress); "
                  "each replica times its variants before it reports ready...", file=sys.stderr)  # fmt: skip
            url = runtime.start(config, menu=menu)
        _say_serving(config, menu, url, live)
        for stop in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (nohup, &)
            signal.signal(stop, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping tiergate...", file=sys.stderr)
        if live is not None:
            live.stop()
        runtime.stop()
    return 0


def live_build(config) -> bool:
    """Whether ``serve`` builds behind what it serves: ``compress.live.enabled``, in the
    colocated topology (per_variant deploys one deployment per variant, all at start)."""
    if config.compress.live.enabled and config.serving.ray.topology != "colocated":
        print("compress.live: the per_variant topology builds every variant before serving", file=sys.stderr)
    return config.compress.live.enabled and config.serving.ray.topology == "colocated"


def _say_serving(config, menu, url: str, live) -> None:
    from tiergate import runtime
    from tiergate.profiles import render_table

    print(render_table(menu))
    print(f"\ntiergate is serving {menu.model} at {url}  (API docs: {url}/docs)")
    if live is not None and live.pending():
        print(f"building behind it: {', '.join(live.pending())}; each joins the menu when measured "
              f"(progress: curl {url}/v1/variants)")  # fmt: skip
    print(f"tiers: {', '.join(config.tiers)}; try: curl {url}/v1/tiers")
    print(f"metrics for Prometheus to scrape: {runtime.metrics_url(config.serving)} "
          "(deploy/prometheus/prometheus.yml)\nCtrl-C stops it.")  # fmt: skip


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config file serve follows for changes: --config, else $TIERGATE_CONFIG."""
    from tiergate import settings

    return Path(args.config) if args.config else settings.config_path()


def _ray_env(args: argparse.Namespace) -> int:
    from tiergate.config import load_config
    from tiergate.serving.ray_env import missing_programs, ray_flag_sources

    config = load_config(args.config, _overrides(args))
    sources = ray_flag_sources(config.serving)
    for name, (value, source) in sources.items():
        print(f"export {name}={shlex.quote(value)}  # {source}")
    for line in missing_programs(config.serving, sources):  # on stderr, seen under eval "$(...)"
        print(f"tiergate ray-env: WARNING: {line}", file=sys.stderr)
    print("# Ray token authentication: every node, and every client (serve deploy, ray job), needs the")
    print("# same token in $RAY_AUTH_TOKEN or ~/.ray/auth_token; on the head: ray get-auth-token --generate")
    return 0


def _train_base(args: argparse.Namespace) -> int:
    from tiergate.compression import load_splits, train_base
    from tiergate.config import load_config

    config = load_config(args.config, _overrides(args))
    if config.model.source != "resnet":
        raise ValueError("train-base trains the built-in ResNet (model.source: resnet)")
    out = args.out or config.model.weights
    if out is None:
        raise ValueError("train-base: give --out or set model.weights in the config")
    meta = train_base(config.model, load_splits(config.data), Path(out))
    print(json.dumps({"weights": str(out), **meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
