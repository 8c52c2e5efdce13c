"""culturemert: embed, adapt, merge and evaluate music encoders across musical traditions."""

__version__ = "0.1.0"
