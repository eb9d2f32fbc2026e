"""Offline-first sync protocol core: wire messages, cursors, push ordering and merge. No I/O."""
