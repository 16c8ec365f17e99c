"""The inference engine: model packages, runtimes, tiling, workers and the engine service."""
