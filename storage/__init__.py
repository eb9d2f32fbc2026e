"""Everything that touches PostgreSQL and object storage."""
