"""hana-rules: an automation engine for Hana lead and opportunity events."""

__version__ = "0.1.0"
