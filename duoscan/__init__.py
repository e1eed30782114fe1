"""duoscan: streaming 2D+3D anomaly inspection (CLI, configuration and embedded services)."""

__version__ = "0.1.0"
