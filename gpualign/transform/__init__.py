"""transform layer."""
