"""Nested dicts (a config as config.json holds it) as one dotted key per leaf."""


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"attention": "full"}} -> {"model.attention": "full"}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
