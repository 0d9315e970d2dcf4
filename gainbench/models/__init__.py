from gainbench.models.loading import ModelSpec, context_length, load_model

__all__ = ["ModelSpec", "context_length", "load_model"]
