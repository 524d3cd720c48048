"""Portable copies of the trained model (TorchScript, ONNX) and their parity checks."""
