"""The live runtime: sources, ring buffers, windowing, recognition, smoothing, sinks and broadcast."""
