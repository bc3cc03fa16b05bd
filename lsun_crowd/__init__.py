"""lsun-crowd: build large, trustworthy image datasets with crowd votes and a classifier cascade."""

__version__ = "0.1.0"
