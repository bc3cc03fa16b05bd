"""One HIT of a category, rendered as a worker would see it, before anything is published."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from lsun_crowd.crowd import CrowdBackend, HitBatch, HitItem, HitPreview, HitSpec, PreviewsHits
from lsun_crowd.ledger import iter_pool
from lsun_crowd.project import Project
from lsun_crowd.publish import question
from lsun_crowd.render import Renderer
from lsun_crowd.schema import Item
from lsun_crowd.store import category_id


def sample_hit(project: Project, category: str | None = None) -> HitBatch:
    """A one-HIT batch of the category's first ``items_per_hit`` pool images (the first category
    when none is named)."""
    name = category or next(iter(project.config.project.categories), "")
    if not name:
        raise ValueError("no categories: list them in [project] categories of lsun-crowd.toml")
    if category and category not in project.config.project.categories:
        raise ValueError(f"category {category!r} is not one of {project.config.project.categories}")
    with project.store.session() as session:
        first = next(iter_pool(session, category_id(session, name), project.config.crowd.items_per_hit), [])
        items = [item for item, _ in first]
        rows = session.execute(select(Item.id, Item.uri).where(Item.id.in_(items)).order_by(Item.id)).all()
    if not rows:
        raise ValueError(f"category {name!r} has no unlabeled images left to preview")
    spec = HitSpec("preview", tuple(HitItem(str(item), uri) for item, uri in rows))
    return HitBatch(
        f"{project.config.project.name}:{name}:preview",
        name,
        question(name),
        (spec,),
        1,
        project.config.crowd.reward_per_assignment,
    )


def render_preview(crowd: CrowdBackend, batch: HitBatch, project_dir: Path | None = None) -> HitPreview:
    """The adapter's own rendering where it has one (:class:`~lsun_crowd.crowd.PreviewsHits`: MTurk's,
    with its image URLs, submit target and size limit); otherwise the grid from the project's
    templates with local images as file URLs, submitting nowhere."""
    if isinstance(crowd, PreviewsHits):
        return crowd.preview(batch)
    shown = [
        HitItem(item.item_key, Path(item.uri).as_uri() if Path(item.uri).is_absolute() else item.uri)
        for item in batch.hits[0].items
    ]
    html = Renderer(project_dir).grid(batch.question, shown, "#preview")
    return HitPreview(html, len(html), None, f"rendered for the {crowd.name} crowd, local images as file URLs")
