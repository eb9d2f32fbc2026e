"""Fairwatch HTTP service: the Litestar app, settings, CLI, worker and scheduler."""
