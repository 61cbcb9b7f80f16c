"""The default instrument taxonomy (docs/dataset.md). A model bundle or a dataset may carry others."""

DEFAULT_CLASSES: tuple[str, ...] = (
    "accordion",
    "banjo",
    "cello",
    "clarinet",
    "drums",
    "flute",
    "guitar",
    "harmonica",
    "organ",
    "piano",
    "saxophone",
    "trumpet",
    "violin",
)


def parse_class_list(text: str, known: tuple[str, ...] = DEFAULT_CLASSES) -> tuple[str, ...]:
    """Parse a comma-separated class list, keeping the taxonomy's order.

    Raises ValueError naming the unknown classes, so the CLI can report them in one line.
    """
    wanted = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown class(es) {', '.join(unknown)}; known: {', '.join(known)}")
    if not wanted:
        raise ValueError("empty class list")
    return tuple(name for name in known if name in wanted)
