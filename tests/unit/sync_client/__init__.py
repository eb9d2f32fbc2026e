"""Tests of the reference device client (outbox, transport, device loops against a fake)."""
