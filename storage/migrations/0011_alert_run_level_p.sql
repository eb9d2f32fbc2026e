-- Alerts are raised on the run-level (family-wise) p-value over all scans of a run; the scan's
-- own p-value and recurrence interval and the number of scans are kept beside it
-- (docs/decisions/0110-alerts.md). Alerts raised before hold NULL here: their p_value is the
-- scan's own.
ALTER TABLE alerts
    ADD COLUMN scan_p_value double precision,
    ADD COLUMN scan_recurrence_interval_days double precision,
    ADD COLUMN scans_in_run integer CHECK (scans_in_run >= 1);
