"""tlwatch: keep watched folders in sync with Twelve Labs assets."""

__version__ = "0.1.0"
