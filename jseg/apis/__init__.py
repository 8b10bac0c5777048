"""High-level APIs: build a model from a config and a checkpoint, segment images."""
from .inference import inference_model, init_model, test_pipeline_of

__all__ = ['inference_model', 'init_model', 'test_pipeline_of']
