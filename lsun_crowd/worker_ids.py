"""One worker, one id: ids that differ only by invisible characters (zero-width spaces and joiners,
a byte-order mark, soft hyphens: Unicode's format characters) or by compatibility look-alikes
(full-width letters, ligatures) are the same worker once normalised, as Unicode's NFKC and
identifier rules (UAX #31) treat them."""

from __future__ import annotations

import unicodedata


def normal_worker_id(text: str) -> str:
    """``text`` in NFKC with every format character (category Cf) removed, blanks trimmed."""
    visible = "".join(character for character in text if unicodedata.category(character) != "Cf")
    normal = unicodedata.normalize("NFKC", visible)
    return "".join(character for character in normal if unicodedata.category(character) != "Cf").strip()
