"""The SQL models, one SELECT-based model per file, named after the table it builds.

A package only so the files ship inside the wheel; ``DuckDBStore.run_model`` finds them
with ``importlib.resources``, never by a path relative to the source tree.
"""
