"""wsimito: count mitoses in breast-cancer H&E whole-slide images."""

__version__ = "0.1.0"
