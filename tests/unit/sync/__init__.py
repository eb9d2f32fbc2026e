"""Unit tests of the sync protocol core (pure, no I/O)."""
