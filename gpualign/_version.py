"""The version of gpualign (read by the build: ``[tool.hatch.version]``)."""

__version__ = "0.1.0"
