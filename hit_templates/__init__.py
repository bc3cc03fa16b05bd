"""The default HIT templates, shipped as ``lsun_crowd.hit_templates``: a project's own
``hit_templates/`` folder overrides or extends them (see docs/templates.md)."""
