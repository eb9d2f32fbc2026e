"""The Fairwatch domain: taxonomy, reports, cases, registry, matching and risk statistics. No I/O."""
