-- Placeholder: this migration's content is being written.
SELECT 1;
