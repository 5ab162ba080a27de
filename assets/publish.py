"""The run's last step: publish what users read, atomically (segmentation_dagster/
publishing.py explains the release folders and the link)."""

from pathlib import Path

import dagster as dg

from segmentation_dagster.publishing import EXPORT_COLUMNS, publish_run
from segmentation_dagster.resources import DuckDBStore, StateFolder


@dg.asset(
    deps=["customer_segments", "segment_profiles", "model_comparison",
          "segment_stability", "new_customer_segments"],
    group_name="publish",
    kinds={"duckdb", "parquet", "csv"},
)
def published_segments(
    context: dg.AssetExecutionContext, duckdb: DuckDBStore, state_folder: StateFolder
) -> dg.MaterializeResult:
    """Publish the current segments, segment models, sizes, profiles, comparison and K
    selection, with the segment history and the exports, in one atomic switch of
    ``<state>/published`` to this run's release. It runs only after every blocking check
    upstream has passed; a run that fails or is killed before it leaves the published
    state exactly as the last good run left it."""
    release = publish_run(duckdb, Path(state_folder.path), context.run.run_id)
    exports = release / "exports"
    return dg.MaterializeResult(metadata={
        "release": dg.MetadataValue.path(str(release)),
        "published": dg.MetadataValue.path(str(Path(state_folder.path) / "published")),
        "exports": dg.MetadataValue.md("\n".join(
            f"- `{path.name}`" for path in sorted(exports.iterdir()))),
        "export_columns": ", ".join(EXPORT_COLUMNS),
    })
