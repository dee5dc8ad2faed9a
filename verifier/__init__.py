"""Proof-of-Render: compare what nodes return with what Blender renders."""
