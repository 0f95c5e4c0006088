"""crossrec: cross-category recommendation with transfer learning."""

__version__ = "0.1.0"
