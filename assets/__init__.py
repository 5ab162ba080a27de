"""Dagster assets: thin shells that load from DuckDB, call the core, write back and
record to MLflow. One module per domain."""
