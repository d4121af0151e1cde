"""sarmae: the SARMAE foundation model for SAR, as a command-line toolkit and a library."""

__version__ = "0.1.0"
