"""The columns a data set names: how they are listed in messages, and the names refused because a
model would read the wrong thing (a name used twice, a header cell left empty) or a column it cannot
use (text among the features), each with its remedy."""

from __future__ import annotations

import re

from ..errors import DataError


def _listing(names, limit=20) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def _refuse_repeated_names(names, source):
    """DataError naming a column name that appears twice, and both of its (1-based) positions."""
    first = {}
    for position, column in enumerate(names, 1):
        if column in first:
            raise DataError(f"{source}: column name {column!r} appears twice (columns {first[column]} and "
                            f"{position}); give each column its own name")
        first[column] = position


# pandas' names for a column whose header cell is empty (an index written by to_csv without index=False)
# and for an index written to Parquet.
_UNNAMED = re.compile(r"Unnamed: \d+|__index_level_\d+__")


def text_feature_hint(exc, target):
    """``exc`` (a DataError) with the remedy for a feature column that holds text: name the numeric
    features; the same error unchanged for the target's column, or any other error."""
    if "is not a number" in str(exc) and f"column {str(target)!r}: " not in str(exc):
        return DataError(f"{exc}; to leave that column out, name the features with --features")
    return exc


def refuse_unnamed(features, source):
    """DataError for a feature column the file's header leaves unnamed: most likely an index that pandas
    wrote, which would silently become a feature. Named with ``features``, it is used as any column."""
    if unnamed := [f for f in features if not f.strip() or _UNNAMED.fullmatch(f)]:
        raise DataError(f"{source}: column {unnamed[0]!r} has no name in the header: most likely the index "
                        "pandas wrote (to_csv without index=False); name the feature columns with --features "
                        "(features= in Python), or write the file without its index")
