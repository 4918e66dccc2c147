"""textclf: train, evaluate and use CNN / (Bi)LSTM / bag-of-ngrams text classifiers from a YAML config."""

__version__ = "0.1.0"
__all__ = ["Model", "evaluate", "load", "train"]

_API = {"Model", "evaluate", "load", "train"}


def __getattr__(name: str):  # `from textclf_cli import load`, without importing the API on `textclf --help`
    if name in _API:
        import importlib  # by name: the package itself stays below every module in the import layers

        return getattr(importlib.import_module("textclf_cli.api"), name)
    raise AttributeError(f"module 'textclf_cli' has no attribute {name!r}")
