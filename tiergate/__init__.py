"""tiergate: serve one image classifier as a measured menu of compressed variants."""

__version__ = "0.1.0"
