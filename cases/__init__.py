"""The Fairwatch domain: taxonomy, reports, cases, registry, matching, risk statistics. No I/O."""
