"""warp layer."""
