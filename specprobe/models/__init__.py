"""Loading: Hugging Face checkpoints and revisions, datasets and token subsets, tiny models, ONNX graphs."""
