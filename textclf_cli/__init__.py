"""textclf: train, evaluate and use CNN / (Bi)LSTM / bag-of-ngrams text classifiers from a YAML config."""

__version__ = "0.1.0"
