"""Named sets of selection rules for ``ase-flatten select --preset``.

``paper`` is the paper's loop (its fields are :class:`SelectionConfig`'s
defaults). A preset names only the rule fields it changes; single flags
(``--factor``, ``--pick``, ...) then change single rules on top of it.
"""

from __future__ import annotations

#: The fields a preset may set: the rules of one iteration, not sizes or seeds.
RULE_FIELDS = (
    "factor",
    "threshold",
    "allocation",
    "criterion",
    "pick",
    "diverse_share",
)

PRESETS: dict[str, dict] = {
    "paper": {},
}
