"""liif: upscale images to any size with a Local Implicit Image Function (Chen et al., 2021)."""

__version__ = "0.1.0"
