"""mailcase: a self-hosted email platform for support and CRM teams."""

__all__ = ["__version__"]

__version__ = "0.1.0"
