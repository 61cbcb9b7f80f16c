"""Network architectures: audio CNNs, the frame CNN and the late-fusion network."""
