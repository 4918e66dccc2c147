"""The inference path shared by predict, evaluate, export and serve: torch and ONNX scorers, the sidecar."""
