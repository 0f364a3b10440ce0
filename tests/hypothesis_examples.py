"""How many examples a property test draws: `examples(n)` is n under the suite's default
Hypothesis profile (CI, the quick loop) and ten times n under `--hypothesis-profile=deep`
(registered in conftest.py): a hunt for new bugs after changing what a property covers, or
before a release. A fixed seed is not used: every run draws new examples."""

from __future__ import annotations

from hypothesis import settings

DEFAULT_MAX_EXAMPLES = 100
"""The default profile's max_examples (Hypothesis's own); the deep profile's is ten times it."""


def examples(n: int) -> int:
    """`n` examples, scaled by the loaded profile (read when the test module is imported, after
    pytest has loaded the profile its command line names)."""
    return n * settings.default.max_examples // DEFAULT_MAX_EXAMPLES
