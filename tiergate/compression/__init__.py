"""Turn a base classifier into ONNX variants: fp32, int8, pruned, distilled, low-rank
and compositions of them. Imports nothing from profiles/ or serving/."""

from tiergate.compression.cache import Artifact, ArtifactCache, file_sha256
from tiergate.compression.data import DataConfig, DataError, Dataset, Splits, load_splits
from tiergate.compression.pipeline import (
    BASE_VARIANT,
    Builder,
    BuiltVariant,
    CompressionError,
    VariantSpec,
    parse_variants,
)
from tiergate.compression.recipes import (
    Distill,
    LowRank,
    PruneChannels,
    QuantizeInt8,
    Recipe,
    default_recipes,
)
from tiergate.compression.source import ModelConfig, ModelError, load_base, train_base, weights_digest
from tiergate.compression.train import Fit

__all__ = [
    "BASE_VARIANT", "Artifact", "ArtifactCache", "Builder", "BuiltVariant", "CompressionError",
    "DataConfig", "DataError", "Dataset", "Distill", "Fit", "LowRank", "ModelConfig", "ModelError",
    "PruneChannels", "QuantizeInt8", "Recipe", "Splits", "VariantSpec", "default_recipes",
    "file_sha256", "load_base", "load_splits", "parse_variants", "train_base", "weights_digest",
]  # fmt: skip
