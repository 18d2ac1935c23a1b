"""Functions `slither bench` calls: as little Python work as possible, so that what
is measured is the engine's round trip."""


def echo(items):
    return items
