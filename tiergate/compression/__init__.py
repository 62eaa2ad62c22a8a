"""Turn a base classifier into ONNX variants: fp32, int8, pruned, distilled, low-rank and
compositions of them, cached by content. Imports nothing from profiles or serving.

    splits = load_splits(DataConfig(source="digits"))
    builder = Builder(ArtifactCache(root), load_base(model_config, splits), ...)

Names resolve lazily: ``tiergate.compression.cache`` alone does not import torch.
"""

from tiergate._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Artifact", "ArtifactCache", "file_sha256"], ".cache"),
    **dict.fromkeys(["DataConfig", "DataError", "Dataset", "Splits", "load_splits"], ".data"),
    **dict.fromkeys(
        ["BASE_VARIANT", "Builder", "BuiltVariant", "CompressionError", "VariantSpec", "parse_variants"],
        ".pipeline",
    ),
    **dict.fromkeys(
        ["Distill", "LowRank", "PruneChannels", "QuantizeInt8", "Recipe", "default_recipes"], ".recipes"
    ),
    **dict.fromkeys(["ModelConfig", "ModelError", "load_base", "train_base", "weights_digest"], ".source"),
    "Fit": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
