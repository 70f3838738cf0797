"""Host runners: execute a bundle's methods in process (ExecuTorch runtime, ONNX Runtime)."""
