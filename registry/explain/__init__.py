"""What a version's ONNX graph says about explaining it."""
