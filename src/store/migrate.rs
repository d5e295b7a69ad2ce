//! `contactq migrate-store`: a SQLite database copied into an empty PostgreSQL one.
