"""What a finished project holds, for comparing a run through faults with a clean one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsun_crowd.project import Project

TOTALS = (
    "SELECT COUNT(*) FROM votes",
    "SELECT COUNT(*) FROM assignments",
    "SELECT COUNT(*) FROM hits",
    "SELECT COUNT(DISTINCT platform_hit_id) FROM hits",
    "SELECT COUNT(*) FROM (SELECT assignment_id, item_id FROM votes GROUP BY 1, 2 HAVING COUNT(*) > 1)",
)


def labels_and_totals(project: Project) -> tuple[dict[tuple[str, str], int], tuple[Any, ...]]:
    """Every label by image file name and category; then votes, assignments, HITs, distinct
    platform HITs and votes stored twice (which must be 0)."""
    with project.store.engine.connect() as connection:
        labels = {
            (Path(uri).name, category): label
            for uri, category, label in connection.exec_driver_sql(
                "SELECT items.uri, categories.name, labels.label FROM labels "
                "JOIN items ON items.id = labels.item_id JOIN categories ON categories.id = labels.category_id"
            )
        }
        totals = tuple(connection.exec_driver_sql(sql).scalar() for sql in TOTALS)
    return labels, totals
