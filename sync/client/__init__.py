"""Reference device client: a phone-like outbox with push, pull and resumable uploads."""
