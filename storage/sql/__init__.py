"""Named SQL query files (package data), loaded by storage.queries."""
