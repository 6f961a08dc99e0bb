"""Frozen test zoo: independently trained members, never used to choose a detector setting."""
