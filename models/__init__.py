"""The MLX side: model preparation, the registry, the worker bootstrap and one handler per model type."""
