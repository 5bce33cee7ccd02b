"""metalandscape: the loss landscape of gradient-based meta-learning, measured and drawn."""

__version__ = "0.1.0"
