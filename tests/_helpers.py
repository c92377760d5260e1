"""Small helpers shared by several test modules (imported as ``from _helpers import ...``;
pytest puts this folder on ``sys.path``)."""


def without_seconds(obj):
    """``obj`` with every ``seconds`` entry removed at any depth (wall-clock times differ
    between otherwise identical runs)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj
