"""mnist_pipeline: the library behind the DVC stages in `stages/`."""
